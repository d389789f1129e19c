"""Hostile input: the reproducers of an adversarial run (media files of a few kB that cost gigabytes, reads past the
server's file policy, oversized and deeply nested bodies, idle connections, a close() deadlock). Each ends in an
answer or a clean error within 1.5 GB of peak memory (the model included) and 5 s of CPU, measured in the process
that does the work (a fresh CLI process, or the live server), and the server still answers correctly after."""

from __future__ import annotations

import io
import json
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from helpers import OpenWatch, cli, run_costs
from hostile_media import ffconcat, huge_frame_mkv, mjpeg_file, playlist, png, with_frame_count
from PIL import Image as PILImage
from test_server import Server, data_url

from minicpmv_edge import EmbeddingCache, MessageError, MiniCPMV
from minicpmv_edge.demo import DEMO_IMAGE
from minicpmv_edge.errors import ClosedError
from minicpmv_edge.families.v2_6.video import RECIPE
from minicpmv_edge.shapes_task import Q_COUNT

frame_indices = RECIPE.frame_indices

PEAK_MB = 1536  # the bounds: peak resident memory (model included) and CPU time per reproducer
CPU_S = 5.0
KEY = "sk-hostile"
BOMB_COUNTS = (2_449_473_566, 0xFFFFFFFF)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("media")
    clip = mjpeg_file(d / "clip.avi", "avi", frames=60)  # 60 frames at 25 fps: the recipe samples 0, 25 and 50
    out = {"clip": clip, "huge frame": huge_frame_mkv(d / "huge.mkv")}
    for n in BOMB_COUNTS:
        out[f"bomb {n}"] = with_frame_count(clip, n)
    for w, h in [(80_000_000, 1), (2_000_000, 1), (1, 80_000_000), (40_000_000, 1)]:
        out[f"{w}x{h}"] = png(w, h)
    return out


# ---- the command line and the Python API ----


def _write(tmp: Path, name: str, data: bytes) -> Path:
    (tmp / name).write_bytes(data)
    return tmp / name


def _run(res, tmp: Path, *args: str):
    out, peak, cpu = run_costs([cli(), "run", "-m", str(res.model), "--mmproj", str(res.mmproj), "-t", "2",
                                "--temp", "0", "-n", "8", "-p", "What is it?", *args], timeout=300, cwd=tmp)
    assert 0 < peak < PEAK_MB and 0 < cpu < CPU_S, (args, peak, cpu, out.stderr[-2000:])
    return out


def test_video_header_bombs_cost_what_the_file_holds(converted, media, tmp_path: Path) -> None:
    """A frame count patched to billions is not believed: the frames are counted (as the original's decord indexes
    the file), so the answer is the unpatched file's, at its cost (before: 9.7 GB, 13 s)."""
    res = converted("2.6", "f16")
    want = _run(res, tmp_path, "--video", str(_write(tmp_path, "clip.avi", media["clip"])))
    assert want.returncode == 0 and "3 image(s)" in want.stderr, want.stderr
    for n in BOMB_COUNTS:
        got = _run(res, tmp_path, "--video", str(_write(tmp_path, f"bomb{n}.avi", media[f"bomb {n}"])))
        assert got.returncode == 0, got.stderr
        assert got.stdout == want.stdout and "3 image(s)" in got.stderr


@pytest.mark.parametrize(("name", "flag", "words"), [
    ("huge frame", "--video", "the video stream's frame size is unknown or over the limit of 89478485 pixels "
                              "(max_pixels)"),
    ("80000000x1", "--image", "80000000x1 has a side longer than the limit of 65535 pixels (max_side)"),
    ("2000000x1", "--image", "2000000x1 has a side longer than the limit of 65535 pixels (max_side)"),
    ("1x80000000", "--image", "1x80000000 has a side longer than the limit of 65535 pixels (max_side)"),
])
def test_huge_media_are_refused_from_their_headers(converted, media, tmp_path: Path, name: str, flag: str,
                                                   words: str) -> None:
    res = converted("2.6", "f16")
    path = _write(tmp_path, name.replace(" ", "_") + (".mkv" if flag == "--video" else ".png"), media[name])
    out = _run(res, tmp_path, flag, str(path))
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip().splitlines()[-1] == f"minicpmv-edge run: error: {path}: {words}", out.stderr


def test_image_formats_are_an_allow_list(tmp_path: Path) -> None:
    """Pillow opens what cameras, phones and browsers write; a PostScript file (which Pillow would hand to
    Ghostscript, a program of its own) is refused before Pillow looks at it."""
    from minicpmv_edge import ImageError, load_rgb

    rgb = np.random.default_rng(3).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    for fmt in ("PNG", "BMP", "TIFF", "WEBP", "GIF", "PPM"):
        buf = io.BytesIO()
        PILImage.fromarray(rgb).save(buf, fmt)
        assert load_rgb(buf.getvalue()).shape == (20, 30, 3), fmt
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, "EPS")
    assert PILImage.open(io.BytesIO(buf.getvalue())).format == "EPS"  # Pillow itself would take it
    with pytest.raises(ImageError, match="image bytes: not an image this runtime reads"):
        load_rgb(buf.getvalue())


def test_video_frame_sizes_are_checked_from_the_header(media, tmp_path: Path) -> None:
    from minicpmv_edge.video import VideoError, probe, sampled_frames

    clip = _write(tmp_path, "clip.avi", media["clip"])  # 64 x 48
    assert probe(clip).width == 64
    with pytest.raises(VideoError, match=r"clip.avi: 64x48 has a side longer than the limit of 60 pixels"):
        probe(clip, max_side=60)
    with pytest.raises(VideoError, match=r"frame size is unknown or over the limit of 3000 pixels"):
        probe(clip, max_pixels=3000)  # FFmpeg's own check
    info = probe(clip)
    with pytest.raises(VideoError, match=r"clip.avi: frame 0: 64x48 has a side longer than the limit of 60 pixels"):
        next(sampled_frames(clip, RECIPE.frame_indices, info, max_side=60)[1])  # each sampled frame


def test_the_frame_sample_is_computed_not_listed() -> None:
    """The recipe's choice, written here as the original does it (a list of every round(fps)-th frame), for counts
    a list can hold; a count of billions takes no time and no memory."""
    rng = np.random.default_rng(0)
    for n, fps in [*((int(rng.integers(1, 200_000)), float(rng.uniform(0.1, 120))) for _ in range(300)),
                   (64 * 25, 25.0), (64 * 25 + 1, 25.0), (1, 1e9), (10, 1e-9)]:
        idx = list(range(0, n, max(1, round(fps))))
        if len(idx) > 64:
            gap = len(idx) / 64
            idx = [idx[int(i * gap + gap / 2)] for i in range(64)]
        assert frame_indices(n, fps) == idx, (n, fps)
    t = time.process_time()
    big = frame_indices(0xFFFFFFFF, 1.0)
    assert len(big) == 64 and big[-1] < 0xFFFFFFFF and time.process_time() - t < 0.01


@pytest.fixture(scope="module")
def tiny26(converted):
    res = converted("2.6", "f16")
    with MiniCPMV(res.model, res.mmproj, n_ctx=4096, n_threads=2, cache=EmbeddingCache(max_bytes=0)) as m:
        yield m


def test_prompts_that_cannot_fit_are_refused_before_any_work(tiny26: MiniCPMV) -> None:
    """60 MB of text, a million empty messages and 200 distinct images: refused from bounds known without
    tokenizing or decoding (text length / the longest token, one message at least per context slot, the slicing
    plans from image headers)."""
    rng = np.random.default_rng(1)
    images = [PILImage.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(200)]
    cases = [
        ([{"role": "user", "content": "hello world, " * 4_600_000}], ValueError, r"the prompt is at least \d+ tokens "
         r"\(0 of them image rows\), more than n_ctx 4096"),
        ([{"role": "user", "content": ""}] * 1_000_000, MessageError, "1000000 messages cannot fit in n_ctx 4096"),
        ([{"role": "user", "content": [*images, "Which is red?"]}], ValueError,
         r"the prompt is at least \d+ tokens \(12800 of them image rows\), more than n_ctx 4096"),
    ]
    for msgs, kind, words in cases:
        t = time.process_time()
        with pytest.raises(kind, match=words):
            tiny26.chat(msgs, max_new_tokens=4)
        assert time.process_time() - t < CPU_S / 2, words
        assert tiny26.last.pieces_encoded == 0
    assert tiny26.chat([{"role": "user", "content": [images[0], "Hi"]}], max_new_tokens=2) is not None


def test_close_with_a_stream_open_in_another_thread(converted) -> None:
    """A stream half read in one thread, close() in another, then the stream dropped: close() returns, and later
    calls raise ClosedError instead of waiting forever."""
    res = converted("2.6", "f16")
    m = MiniCPMV(res.model, res.mmproj, n_threads=1)
    box: dict[str, object] = {}
    opened, closing = threading.Event(), threading.Event()

    def reader() -> None:
        s = m.chat([{"role": "user", "content": "Tell a long story."}], stream=True, min_new_tokens=50,
                   max_new_tokens=100)
        box["first"] = next(s)
        opened.set()
        closing.wait(30)
        time.sleep(0.3)  # close() is waiting by now
        del s  # dropped, half read

    t1 = threading.Thread(target=reader, daemon=True)
    t1.start()
    assert opened.wait(60)
    t2 = threading.Thread(target=lambda: (closing.set(), m.close(), box.setdefault("closed", True)), daemon=True)
    t2.start()
    t1.join(30)
    t2.join(30)
    assert not t1.is_alive() and not t2.is_alive() and box.get("closed"), "close() did not return"
    out: list[BaseException] = []

    def later() -> None:
        try:
            m.chat([{"role": "user", "content": "hi"}])
        except ClosedError as e:
            out.append(e)

    t3 = threading.Thread(target=later, daemon=True)
    t3.start()
    t3.join(30)
    assert not t3.is_alive() and len(out) == 1


def test_a_memory_error_has_a_message_on_the_command_line(monkeypatch, capsys) -> None:
    from minicpmv_edge import cli as cli_module
    from minicpmv_edge.cli import info

    monkeypatch.setattr(info, "run", lambda args: _oom())
    assert cli_module.main(["info"]) == 1
    assert capsys.readouterr().err == "minicpmv-edge info: error: out of memory\n"


def _oom() -> int:
    raise MemoryError()


# ---- the server ----


class Reads:
    """Files the server must not open: a video in the server's working directory, one outside its allowed
    directory, each watched with inotify."""

    def __init__(self, root: Path, clip: bytes) -> None:
        self.cwd, self.allowed, self.outside = root / "cwd", root / "allowed", root / "outside"
        for d in (self.cwd, self.allowed, self.outside):
            d.mkdir()
        self.near = _write(self.cwd, "secret.avi", clip)
        self.far = _write(self.outside, "secret.avi", clip)
        _write(self.allowed, "list.m3u8", playlist(self.far))
        self.watches = [OpenWatch(self.near), OpenWatch(self.far)]

    def touched(self) -> list[bool]:
        return [w.touched() for w in self.watches]


@pytest.fixture(scope="module")
def reads(tmp_path_factory: pytest.TempPathFactory, media) -> Reads:
    if not sys.platform.startswith("linux"):
        pytest.skip("the unread-file check uses Linux inotify")
    return Reads(tmp_path_factory.mktemp("reads"), media["clip"])


@pytest.fixture(scope="module")
def server(demo_f16: tuple[Path, Path], reads: Reads, tmp_path_factory: pytest.TempPathFactory):
    import os

    s = Server(*demo_f16, tmp_path_factory.mktemp("log") / "hostile.log", "--parallel", "2", "--allow-local-files",
               str(reads.allowed), "-c", "4096", "-t", "1", "--header-timeout", "2", "--body-timeout", "3",
               cwd=reads.cwd, env={**os.environ, "MINICPMV_EDGE_API_KEY": KEY})
    yield s
    s.stop()


def _post(s: Server, body: bytes | dict, headers: dict | None = None, timeout: float = 60) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    hdr = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}", **(headers or {})}
    return httpx.post(s.url + "/v1/chat/completions", content=content, headers=hdr, timeout=timeout)


def _ask(part: dict | None = None, text: str = "What is it?") -> dict:
    return {"messages": [{"role": "user", "content": [*([part] if part else []), {"type": "text", "text": text}]}],
            "temperature": 0, "max_tokens": 8}


def _video(data: bytes) -> dict:
    return {"type": "video_url", "video_url": {"url": data_url(data, "video/mp4")}}


def _image(data: bytes) -> dict:
    return {"type": "image_url", "image_url": {"url": data_url(data)}}


def _cases(media: dict[str, bytes], reads: Reads) -> list[tuple[str, bytes | dict, dict, int, str]]:
    """(name, body, extra headers, status, words in the error message) of every reproducer."""
    rng = np.random.default_rng(2)
    distinct = [png_bytes(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(200)]
    return [
        *[(f"video bomb {n}", _ask(_video(media[f"bomb {n}"])), {}, 200, "") for n in BOMB_COUNTS],
        ("huge frame", _ask(_video(media["huge frame"])), {}, 400,
         "messages[0].content[0]: the video stream's frame size is unknown or over the limit of 89478485 pixels"),
        *[(name, _ask(_image(media[name])), {}, 400, f"messages[0].content[0]: {name} has a side longer than the "
           "limit of 65535 pixels") for name in ("80000000x1", "2000000x1", "1x80000000")],
        ("ffconcat", _ask(_video(ffconcat("secret.avi"))), {}, 400,
         "messages[0].content[0]: not a video file this runtime reads"),
        ("playlist", _ask({"type": "video_url", "video_url": {"url": "file://" + str(reads.allowed / "list.m3u8")}}),
         {}, 400, "messages[0].content[0]: not a video file this runtime reads"),
        ("60 MB of text", _ask(text="hello world, " * 4_600_000), {}, 400, "the prompt is at least"),
        ("a million empty messages", {"messages": [{"role": "user", "content": ""}] * 1_000_000}, {}, 400,
         "this server takes at most 65536 JSON values"),
        ("200 distinct images", {"messages": [{"role": "user", "content": [*map(_image, distinct), {
            "type": "text", "text": "Which is red?"}]}]}, {}, 400, "(6400 of them image rows), more than n_ctx 4096"),
        ("[ x 100000", b"[" * 100_000, {}, 400, "this server takes at most 65536 JSON values"),
        ("nested 100 deep", b'{"a":' * 100 + b"1" + b"}" * 100, {}, 400, "nested 100 deep"),
        ("text/plain", _ask(), {"Content-Type": "text/plain"}, 415, "must be JSON"),
        ("another origin", _ask(), {"Origin": "https://evil.example"}, 403, "other origins are refused"),
        ("a rebound name", _ask(), {"Host": "evil.example"}, 403, "does not answer requests for that Host"),
    ]


def png_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def _cpu(s: Server) -> float:
    t = psutil.Process(s.proc.pid).cpu_times()
    return t.user + t.system


def _peak_mb(s: Server) -> float:
    """The server's peak resident memory so far (Linux: VmHWM)."""
    for line in Path(f"/proc/{s.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _paths(s: Server, reads: Reads, demo_f16: tuple[Path, Path]) -> list[str]:
    """Server-side paths no client may see in an error (the ones a request did not name itself)."""
    import tempfile

    return [str(reads.cwd), str(reads.outside), str(demo_f16[0].parent), tempfile.gettempdir() + "/"]


@pytest.mark.slow
def test_reproducers_end_cleanly_within_bounds(server: Server, media, reads: Reads, demo_f16) -> None:
    want = _post(server, _ask(_video(media["clip"]))).json()["choices"][0]["message"]["content"]
    for name, body, headers, status, words in _cases(media, reads):
        cpu = _cpu(server)
        r = _post(server, body, headers)
        assert r.status_code == status, (name, r.status_code, r.text[:500])
        spent = _cpu(server) - cpu
        assert spent < CPU_S, (name, spent)
        if status == 200:
            assert r.json()["choices"][0]["message"]["content"] == want, name  # the bomb: the clip's own answer
            continue
        message = r.json()["error"]["message"]
        assert words in message, (name, message)
        assert not any(p in message for p in _paths(server, reads, demo_f16)), (name, message)
    assert reads.touched() == [False, False]  # neither the ffconcat script nor the playlist opened its target
    ok = _post(server, _ask(_image(DEMO_IMAGE.read_bytes()), Q_COUNT))
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "Three."
    assert _peak_mb(server) < PEAK_MB


def test_the_file_watch_sees_a_read(reads: Reads) -> None:
    """The unread-file check itself: reading a watched file is seen."""
    watch = OpenWatch(reads.near)
    try:
        reads.near.read_bytes()
        assert watch.touched()
    finally:
        watch.close()


def test_two_extreme_images_at_once(server: Server, media) -> None:
    with ThreadPoolExecutor(2) as pool:
        codes = list(pool.map(lambda _: _post(server, _ask(_image(media["40000000x1"]))).status_code, range(2)))
    assert codes == [400, 400]
    assert _peak_mb(server) < PEAK_MB


def test_health_answers_while_a_large_body_is_parsed(server: Server) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": ""}] * 1_000_000}).encode()
    done = threading.Event()
    worst = 0.0

    def send() -> None:
        try:
            _post(server, body)
        finally:
            done.set()

    threading.Thread(target=send).start()
    while not done.is_set():
        t = time.monotonic()
        assert httpx.get(server.url + "/health", timeout=10).status_code == 200
        worst = max(worst, time.monotonic() - t)
        time.sleep(0.02)
    assert worst < 1.0, worst  # before: a 3 s stall


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_and_slow_connections_are_closed(server: Server) -> None:
    """--header-timeout 2: connections that send nothing, or headers a byte at a time, are closed; a body that
    does not arrive within --body-timeout 3 gets 408."""
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(50)]
    slow = socket.create_connection(("127.0.0.1", server.port))
    request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    t0 = time.monotonic()
    for i in range(16):  # one byte every 0.25 s: never a whole header block
        try:
            slow.sendall(request[i : i + 1])
        except OSError:  # closed by the server
            break
        time.sleep(0.25)
    assert all(_closed_within(s, 5) for s in [*idle, slow])
    assert 2 <= time.monotonic() - t0 < 10
    stalled = socket.create_connection(("127.0.0.1", server.port))
    stalled.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: 1000\r\n\r\n{")
    stalled.settimeout(10)
    head = stalled.recv(4096)
    assert head.startswith(b"HTTP/1.1 408"), head[:200]
    for s in [*idle, slow, stalled]:
        s.close()
    assert server.health()["status"] == "ok"


def test_allowed_origins_hosts_and_keys(server: Server) -> None:
    """Same-origin pages and clients without an Origin pass; IP addresses and localhost are fine as Host."""
    for headers in ({}, {"Origin": server.url}, {"Host": f"localhost:{server.port}"}, {"Host": "[::1]"}):
        r = _post(server, {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}, headers)
        assert r.status_code == 200, (headers, r.text)
    assert _post(server, _ask(), {"Authorization": "Bearer wrong"}).status_code == 401  # the key from the env


def test_api_key_sources(tmp_path: Path, monkeypatch) -> None:
    import argparse

    from minicpmv_edge.cli.serve import KEY_ENV, _api_key

    def args(**kw) -> argparse.Namespace:
        return argparse.Namespace(**{"api_key": None, "api_key_file": None, **kw})

    monkeypatch.delenv(KEY_ENV, raising=False)
    (tmp_path / "key").write_text("sk-from-file\n")
    assert _api_key(args(api_key_file=str(tmp_path / "key"))) == "sk-from-file"
    assert _api_key(args(api_key="sk-flag")) == "sk-flag" and _api_key(args()) is None
    monkeypatch.setenv(KEY_ENV, "sk-env")
    assert _api_key(args()) == "sk-env"
    with pytest.raises(ValueError, match=f"given twice \\(--api-key and {KEY_ENV}\\)"):
        _api_key(args(api_key="sk-flag"))
    monkeypatch.delenv(KEY_ENV)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="the file is empty"):
        _api_key(args(api_key_file=str(tmp_path / "empty")))


@pytest.mark.slow
def test_cors_for_allowed_origins(demo_f16: tuple[Path, Path], tmp_path: Path) -> None:
    s = Server(*demo_f16, tmp_path / "cors.log", "--allowed-origins", "https://app.example", "-t", "1")
    try:
        pre = httpx.options(s.url + "/v1/chat/completions", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"}, timeout=10)
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "https://app.example"
        r = httpx.post(s.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}],
                                                              "max_tokens": 1},
                       headers={"Origin": "https://app.example"}, timeout=60)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        other = httpx.post(s.url + "/v1/chat/completions", json={"messages": []},
                           headers={"Origin": "https://evil.example"}, timeout=60)
        assert other.status_code == 403
    finally:
        s.stop()


@pytest.fixture(scope="module")
def one_slot(demo_f16: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    s = Server(*demo_f16, tmp_path_factory.mktemp("log") / "one.log", "--parallel", "1", "--queue", "1",
               "-c", "16384", "-t", "1")
    yield s
    s.stop()


def _wait(s: Server, key: str, value: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while s.health()[key] != value:
        assert time.monotonic() < deadline, s.health()
        time.sleep(0.05)


@pytest.mark.slow
def test_a_queued_client_that_leaves_gives_its_place_back(one_slot: Server) -> None:
    s = one_slot
    stop = threading.Event()

    def hold() -> None:  # the only slot, busy until told to stop
        body = {"messages": [{"role": "user", "content": "Describe the image."}], "stream": True,
                "max_tokens": 16000, "min_tokens": 16000}
        with httpx.stream("POST", s.url + "/v1/chat/completions", json=body, timeout=120) as r:
            for _ in r.iter_lines():
                if stop.is_set():
                    break
                time.sleep(0.005)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        _wait(s, "slots_processing", 1)
        payload = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}).encode()
        raw = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        leaver = socket.create_connection(("127.0.0.1", s.port))
        leaver.sendall(raw)
        _wait(s, "queue", 1)
        leaver.close()  # gone while queued
        _wait(s, "queue", 0, 5)
        waiter = socket.create_connection(("127.0.0.1", s.port))  # the place is free again: queued, not 503
        waiter.sendall(raw)
        _wait(s, "queue", 1)
        stop.set()
        waiter.settimeout(60)
        assert waiter.recv(4096).startswith(b"HTTP/1.1 200")
        waiter.close()
    finally:
        stop.set()
        holder.join(60)
    _wait(s, "slots_processing", 0)


@pytest.mark.slow
def test_soak_memory_returns(server: Server, media, reads: Reads) -> None:
    """The reproducers again and again: the server's resident memory comes back to within 100 MB of where it
    started, and it still answers."""
    cases = [c for c in _cases(media, reads) if c[3] != 403]
    _post(server, _ask(_image(DEMO_IMAGE.read_bytes()), Q_COUNT))
    server.wait_idle(30)
    rss0 = server.rss_mb()
    for _ in range(3):
        for _name, body, headers, status, _words in cases:
            assert _post(server, body, headers).status_code == status
    server.wait_idle(30)
    assert server.rss_mb() - rss0 < 100, (rss0, server.rss_mb())
    ok = _post(server, _ask(_image(DEMO_IMAGE.read_bytes()), Q_COUNT))
    assert ok.json()["choices"][0]["message"]["content"] == "Three."
    assert _peak_mb(server) < PEAK_MB

