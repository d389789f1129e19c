"""`minicpmv-edge serve`, live on 127.0.0.1, driven by the official `openai` client (and raw HTTP where a client
would refuse to send the request): answers equal MiniCPMV.chat()'s, concurrency, disconnects, bad input, prefix
reuse, the queue bound. The browser test is test_server_page.py."""

from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import psutil
import pytest
from helpers import cli
from PIL import Image as PILImage

from minicpmv_edge.chat import MiniCPMV
from minicpmv_edge.demo import DEMO_IMAGE
from minicpmv_edge.image import Image
from minicpmv_edge.shapes_task import Q_COUNT, Q_DESCRIBE, dataset
from minicpmv_edge.video import Video

KEY = "sk-test-minicpmv-edge"
SEED = 4242  # the questions asked here (a seed of their own)


class Server:
    """A `minicpmv-edge serve` process on a free port; its log in `log`."""

    def __init__(self, model: Path, mmproj: Path, log: Path, *args: str, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.clients: list[openai.OpenAI] = []
        with log.open("w") as out:
            self.proc = subprocess.Popen([cli(), "serve", "-m", str(model), "--mmproj", str(mmproj), "--port",
                                          str(self.port), *args], stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                         env=env)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited ({self.proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)

    def client(self, key: str = KEY) -> openai.OpenAI:
        self.clients.append(openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=120))
        return self.clients[-1]

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=10).json()

    def rss_mb(self) -> float:
        return psutil.Process(self.proc.pid).memory_info().rss / (1 << 20)

    def wait_idle(self, timeout: float) -> float:
        """Seconds until no slot is busy (AssertionError after `timeout`)."""
        t0 = time.monotonic()
        while True:
            h = self.health()
            if h["slots_processing"] == 0 and h["queue"] == 0:
                return time.monotonic() - t0
            assert time.monotonic() - t0 < timeout, h
            time.sleep(0.05)

    def stop(self) -> None:
        for c in self.clients:
            c.close()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory the server may read local files from."""
    return tmp_path_factory.mktemp("allowed")


@pytest.fixture(scope="module")
def server(demo_f16: tuple[Path, Path], files: Path, tmp_path_factory: pytest.TempPathFactory):
    s = Server(*demo_f16, tmp_path_factory.mktemp("log") / "server.log", "--parallel", "4", "--api-key", KEY,
               "--allow-local-files", str(files), "--max-body-mb", "1", "-c", "1280", "-t", "1")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def local(demo_f16: tuple[Path, Path]):
    """The same files in this process: what the server's answers must equal."""
    with MiniCPMV(*demo_f16, n_ctx=1280, n_threads=1) as m:
        yield m


def png(img: PILImage.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def as_openai(msgs: list[dict]) -> list[dict]:
    """A conversation with PIL images -> OpenAI messages (images as PNG data: URLs)."""
    out = []
    for m in msgs:
        content = m["content"]
        if isinstance(content, str):
            out.append({"role": m["role"], "content": content})
            continue
        parts = [{"type": "text", "text": c} if isinstance(c, str) else
                 {"type": "image_url", "image_url": {"url": data_url(png(c))}} for c in content]
        out.append({"role": m["role"], "content": parts})
    return out


def as_local(msgs: list[dict]) -> list[dict]:
    """The same conversation with each image as the same PNG bytes (decoded the same way as the server's)."""
    return [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else
             [c if isinstance(c, str) else Image(png(c)) for c in m["content"]]} for m in msgs]


def ask(client: openai.OpenAI, msgs: list[dict], stream: bool, **kw) -> tuple[str, str | None, object]:
    """(text, finish_reason, usage) of a greedy request."""
    if not stream:
        r = client.chat.completions.create(model="demo", messages=msgs, temperature=0, **kw)
        return r.choices[0].message.content, r.choices[0].finish_reason, r.usage
    text, finish, usage = [], None, None
    for c in client.chat.completions.create(model="demo", messages=msgs, temperature=0, stream=True,
                                            stream_options={"include_usage": True}, **kw):
        if c.usage is not None:
            usage = c.usage
        for ch in c.choices:
            text.append(ch.delta.content or "")
            finish = ch.finish_reason or finish
    return "".join(text), finish, usage


def kinds(n_each: int = 1) -> list:
    items = dataset(SEED, 60)
    return [it for k in ("shape", "color", "count", "compare", "two_turn") for it in
            [x for x in items if x.kind == k][:n_each]]


@pytest.mark.slow
def test_answers_equal_chat_streamed_and_not(server: Server, local: MiniCPMV, files: Path, tmp_path: Path) -> None:
    from test_video_cache import make_clip

    client = server.client()
    cases = [(it.kind, as_openai(it.messages), as_local(it.messages)) for it in kinds()]
    clip = make_clip(tmp_path / "clip.mp4", seconds=3, fps=4, w=224, h=168)
    cases.append(("video", [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": data_url(clip.read_bytes(), "video/mp4")}},
        {"type": "text", "text": Q_DESCRIBE}]}], [{"role": "user", "content": [Video(clip), Q_DESCRIBE]}]))
    (files / "clip.mp4").write_bytes(clip.read_bytes())  # a local file, allowed by --allow-local-files
    cases.append(("video file", [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": "file://" + str(files / "clip.mp4")}},
        {"type": "text", "text": Q_COUNT}]}], [{"role": "user", "content": [Video(clip), Q_COUNT]}]))
    assert sum(1 for c in cases if sum(isinstance(p, dict) and p.get("type") == "image_url"
                                       for m in c[1] if isinstance(m["content"], list) for p in m["content"]) == 2)
    for kind, remote, mine in cases:
        want = local.chat(mine, temperature=0)
        stats = local.last
        assert want, kind
        for stream in (False, True):
            text, finish, usage = ask(client, remote, stream)
            assert (text, finish) == (want, stats.finish_reason), (kind, stream)
            assert (usage.prompt_tokens, usage.completion_tokens) == (stats.prompt_tokens, len(stats.tokens))


@pytest.mark.slow
def test_16_clients_5_requests_each_all_correct(server: Server, local: MiniCPMV) -> None:
    items = dataset(SEED + 1, 16)
    want = [local.chat(as_local(it.messages), temperature=0) for it in items]
    remote = [as_openai(it.messages) for it in items]
    client = server.client()
    rss0 = server.rss_mb()

    def one_client(c: int) -> list[tuple[str, str]]:
        got = []
        for r in range(5):
            k = (c * 5 + r) % len(items)
            got.append((ask(client, remote[k], stream=bool(r % 2))[0], want[k]))
        return got

    with ThreadPoolExecutor(16) as pool:
        results = [pair for res in pool.map(one_client, range(16)) for pair in res]
    assert len(results) == 80
    assert [g for g, _ in results] == [w for _, w in results]
    server.wait_idle(10)
    assert server.rss_mb() - rss0 < 150  # 4 slots' contexts exist already; images are cached (a few MB)


def test_prefix_of_a_conversation_is_reused(server: Server) -> None:
    img = data_url(DEMO_IMAGE.read_bytes())
    first = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": img}},
                                          {"type": "text", "text": Q_COUNT}]}]
    hdr = {"Authorization": f"Bearer {KEY}"}
    r1 = httpx.post(server.url + "/v1/chat/completions", json={"messages": first, "temperature": 0}, headers=hdr,
                    timeout=60).json()
    answer = r1["choices"][0]["message"]["content"]
    other = [{"role": "user", "content": "Describe the image."}]
    for i in range(4):  # another conversation meanwhile, four times: it keeps to a slot of its own
        r = httpx.post(server.url + "/v1/chat/completions", json={"messages": other, "temperature": 0,
                                                                  "max_tokens": 4}, headers=hdr, timeout=60).json()
        assert (r["timings"]["cache_n"] >= r["usage"]["prompt_tokens"] - 1) == (i > 0)
    second = [*first, {"role": "assistant", "content": answer},
              {"role": "user", "content": "What color is the circle?"}]
    r2 = httpx.post(server.url + "/v1/chat/completions", json={"messages": second, "temperature": 0}, headers=hdr,
                    timeout=60).json()
    t = r2["timings"]
    assert t["cache_n"] >= r1["usage"]["prompt_tokens"]  # the whole first turn, image rows included
    assert t["prompt_n"] + t["cache_n"] == r2["usage"]["prompt_tokens"]
    assert t["prompt_n"] <= 30 and t["pieces_cached"] == t["pieces"] == 3


def test_stop_strings_and_limits(server: Server, local: MiniCPMV) -> None:
    it = kinds()[0]
    want = local.chat(as_local(it.messages), temperature=0)
    i = next(i for i in range(len(want) // 2, len(want) - 1) if not want[i - 1 : i + 2].isspace()
             and " " not in want[i - 1 : i + 2])  # a stop inside a word: nothing to strip before it
    stop = want[i : i + 2]
    client = server.client()
    for stream in (False, True):
        text, finish, _ = ask(client, as_openai(it.messages), stream, stop=[stop, "never seen"])
        assert (text, finish) == (want[: want.index(stop)].rstrip(), "stop")
        text, finish, usage = ask(client, as_openai(it.messages), stream, max_tokens=1)
        assert finish == "length" and usage.completion_tokens == 1 and want.startswith(text)


def bad(server: Server, body: bytes | dict, key: str | None = KEY, **kw) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(server.url + "/v1/chat/completions", content=content, headers=headers, timeout=60, **kw)
    return r.status_code, r.json()


def test_bad_input_gets_the_right_status_and_the_server_keeps_serving(server: Server, files: Path,
                                                                      tmp_path: Path) -> None:
    img = data_url(DEMO_IMAGE.read_bytes())
    good = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": img}},
                                                      {"type": "text", "text": Q_COUNT}]}], "temperature": 0}
    big = PILImage.new("RGB", (1344, 1008), "white")
    outside = tmp_path / "secret.png"
    outside.write_bytes(DEMO_IMAGE.read_bytes())

    def with_part(part: dict) -> dict:
        return {"messages": [{"role": "user", "content": [part, {"type": "text", "text": "Hi"}]}]}

    cases = [
        (b"{not json", {}, 400, "not valid JSON"),
        ({"messages": "hello"}, {}, 400, "'messages' must be a non-empty array"),
        ({**good, "temperature": "hot"}, {}, 400, "'temperature' must be a number"),
        ({**good, "max_tokens": 0}, {}, 400, "'max_tokens' must be between"),
        ({**good, "n": 2}, {}, 400, "'n' > 1 is not supported"),
        ({**good, "downsample_mode": "4x"}, {}, 400, "has no downsample mode"),  # a resampler model
        ({**good, "chat_template_kwargs": {"enable_thinking": "no"}}, {}, 400, "must be true or false"),
        ({"messages": [{"role": "robot", "content": "x"}]}, {}, 400, "unknown role"),
        (with_part({"type": "image_url", "image_url": {"url": data_url(b"not an image at all")}}), {}, 400,
         "messages[0].content[0]: not an image this runtime reads"),
        (with_part({"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}), {}, 400,
         "invalid base64"),
        (with_part({"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}), {}, 400,
         "does not download"),
        (with_part({"type": "image_url", "image_url": {"url": str(outside)}}), {}, 400, "outside the directory"),
        (with_part({"type": "input_audio", "input_audio": {}}), {}, 400, "unsupported content part type"),
        ({"messages": [{"role": "user", "content": [*[{"type": "image_url", "image_url": {"url": data_url(png(big))}}
                                                      for _ in range(10)], {"type": "text", "text": "Hi"}]}]}, {}, 400,
         "more than n_ctx"),
        (b'{"messages": [{"role": "user", "content": "' + b"x" * (2 << 20) + b'"}]}', {}, 413,
         "larger than this server's limit"),
        (good, {"key": "sk-wrong"}, 401, "invalid or missing API key"),
        (good, {"key": None}, 401, "invalid or missing API key"),
    ]
    for body, kw, status, words in cases:
        code, err = bad(server, body, **kw)
        assert code == status, (words, code, err)
        assert words in err["error"]["message"], (words, err)
        assert err["error"]["type"] == {400: "invalid_request_error", 401: "authentication_error",
                                        413: "invalid_request_error"}[status]
    code, ok = bad(server, good)
    assert code == 200 and ok["choices"][0]["message"]["content"] == "Three."
    with pytest.raises(openai.AuthenticationError):
        server.client(key="sk-wrong").models.list()
    assert [m.id for m in server.client().models.list().data] == ["model-f16"]
    assert server.health()["status"] == "ok"


@pytest.fixture(scope="module")
def long_server(demo_f16: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    """Slots with room for long answers (min_tokens keeps the model talking): disconnects and the queue."""
    s = Server(*demo_f16, tmp_path_factory.mktemp("log") / "long.log", "--parallel", "2", "--queue", "2",
               "-c", "16384", "-t", "1")
    yield s
    s.stop()


LONG = {"max_tokens": 16000, "extra_body": {"min_tokens": 16000}}  # vLLM's min_tokens


@pytest.mark.slow
def test_disconnects_stop_generation_and_leave_the_server_serving(long_server: Server) -> None:
    s = long_server
    client = s.client()
    msgs = [{"role": "user", "content": [{"type": "image_url",
                                          "image_url": {"url": data_url(DEMO_IMAGE.read_bytes())}},
                                         {"type": "text", "text": Q_DESCRIBE}]}]
    r = client.chat.completions.create(model="demo", messages=msgs, temperature=0, max_tokens=2000,
                                       extra_body={"min_tokens": 2000})
    rate = r.model_extra["timings"]["predicted_per_second"]
    full = 16000 / rate  # seconds one long answer takes to the end

    def leave_early(_: int) -> int:
        stream = client.chat.completions.create(model="demo", messages=msgs, stream=True, **LONG)
        got = 0
        for _c in stream:
            got += 1
            if got == 3:
                break
        stream.close()
        return got

    leave_early(0)
    s.wait_idle(30)
    rss0 = s.rss_mb()
    t0 = time.monotonic()
    with ThreadPoolExecutor(2) as pool:  # two at a time: the slots; each leaves after 3 chunks
        assert list(pool.map(leave_early, range(20))) == [3] * 20
    idle = s.wait_idle(30)
    elapsed = time.monotonic() - t0
    assert elapsed + idle < full * 2, (elapsed, idle, full)  # 20 answers run to the end would take 10 x full
    assert s.rss_mb() - rss0 < 20
    r = client.chat.completions.create(model="demo", messages=[{**msgs[0], "content": [
        msgs[0]["content"][0], {"type": "text", "text": Q_COUNT}]}], temperature=0)
    assert r.choices[0].message.content == "Three."


def test_a_full_queue_answers_503(long_server: Server) -> None:
    client = long_server.client()
    msgs = [{"role": "user", "content": "Describe the image."}]
    streams, stop = [], threading.Event()

    def hold() -> None:
        with client.chat.completions.create(model="demo", messages=msgs, stream=True, **LONG) as st:
            streams.append(st)
            for _ in st:
                if stop.is_set():
                    break

    threads = [threading.Thread(target=hold) for _ in range(4)]  # 2 slots busy, 2 waiting
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while long_server.health()["queue"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="demo", messages=msgs, max_tokens=2)
    assert e.value.status_code == 503 and "busy" in e.value.message
    assert e.value.body["type"] == "service_unavailable_error"
    stop.set()
    for t in threads:
        t.join(60)
    long_server.wait_idle(30)


def test_slots_share_weights_encoder_and_cache_and_close_apart(demo_f16: tuple[Path, Path]) -> None:
    from minicpmv_edge.errors import ClosedError

    msgs = [{"role": "user", "content": [Image(DEMO_IMAGE.read_bytes()), Q_COUNT]}]
    m = MiniCPMV(*demo_f16, n_threads=1)
    s = m.slot()
    assert (s.model, s.encoder, s.cache) == (m.model, m.encoder, m.cache) and s.session is not m.session
    assert s.chat(msgs, temperature=0) == m.chat(msgs, temperature=0) == "Three."
    assert m.last.pieces_encoded == 0  # the slot encoded the picture; its origin found it in the shared cache
    s.close()
    assert m.chat(msgs, temperature=0) == "Three."  # closing a slot frees its context only
    s2 = m.slot()
    m.close()
    with pytest.raises(ClosedError):
        s2.chat(msgs)  # its origin's encoder is gone
    s2.close()
    with pytest.raises(ClosedError):
        m.slot()
