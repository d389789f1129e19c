"""Models named on the Hub (`-hf REPO[:QUANT]`, `MiniCPMV.from_pretrained`), against a local Hub on 127.0.0.1
(hub_mirror.py) serving the trained demo model in the official repositories' layouts: llama.cpp's quantizer made its
Q4_K_M and Q8_0 files, our converter its f16 ones. The real huggingface_hub does the listing, downloading, caching
and resuming, in a child process whose HF_HOME is the test's own and whose HF_ENDPOINT is the mirror: no outside
address is ever used. The demo model answers "Three." about its bundled picture, so the answer shows that the right
files arrived whole."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from helpers import cli
from hub_mirror import Cut, Mirror, Repo

from minicpmv_edge.convert.quantize import quantize_model
from minicpmv_edge.demo import DEMO_CHECKPOINT, DEMO_IMAGE, DEMO_PROMPT

pytestmark = pytest.mark.slow
GGUF_REPO = "openbmb/MiniCPM-V-2_6-gguf"
ORIGINAL_REPO = "openbmb/MiniCPM-V-2_6-demo"
ANSWER = "Three."
PICKLE_REPO = "openbmb/OmniLMM-12B-tiny"  # OmniLMM's release layout: config.json and one pytorch_model.bin


@pytest.fixture(scope="module")
def repos(demo_f16, tiny_hf, tmp_path_factory) -> dict[str, Repo]:
    model, mmproj = demo_f16
    out = tmp_path_factory.mktemp("quants")
    q4 = quantize_model(model, out / "q4.gguf", "Q4_K_M").read_bytes()
    q8 = quantize_model(model, out / "q8.gguf", "Q8_0").read_bytes()
    f16, mm = Path(model).read_bytes(), Path(mmproj).read_bytes()
    readme = b"---\nlibrary_name: gguf\n---\n# MiniCPM-V 2.6 (demo) GGUF\n"
    official = {"README.md": readme, ".gitattributes": b"*.gguf filter=lfs diff=lfs merge=lfs -text\n",
                "ggml-model-f16.gguf": f16, "ggml-model-Q4_K_M.gguf": q4, "ggml-model-Q8_0.gguf": q8,
                "mmproj-model-f16.gguf": mm}
    original = {p.name: p.read_bytes() for p in DEMO_CHECKPOINT.iterdir()}
    original["modeling_minicpmv.py"] = b"raise SystemExit('remote code must never be downloaded')\n"
    original["pytorch_model.bin"] = b"a pickle beside safetensors must never be downloaded"
    return {
        GGUF_REPO: Repo(official),
        "test/no-mmproj-gguf": Repo({"README.md": readme, "model-Q4_K_M.gguf": q4}),
        "test/truncated-gguf": Repo({"ggml-model-Q4_K_M.gguf": q4[: len(q4) // 2], "mmproj-model-f16.gguf": mm}),
        "test/truncated-mmproj-gguf": Repo({"ggml-model-Q4_K_M.gguf": q4, "mmproj-model-f16.gguf": mm[:-1000]}),
        "test/two-mmproj-gguf": Repo({"MiniCPM-V-Q8_0.gguf": q8, "mmproj-MiniCPM-V-Q8_0.gguf": mm,
                                      "mmproj-MiniCPM-V-f16.gguf": mm[:100]}),
        ORIGINAL_REPO: Repo(original),
        PICKLE_REPO: Repo({p.name: p.read_bytes() for p in tiny_hf["omnilmm"].iterdir()}),
    }


@pytest.fixture
def mirror(repos):
    m = Mirror(dict(repos)).start()
    yield m
    m.stop()


@pytest.fixture
def env(mirror: Mirror, tmp_path: Path) -> dict[str, str]:
    """A child's environment: its own Hub cache and our cache, the mirror as the Hub, no token."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    e.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=mirror.url, MINICPMV_EDGE_CACHE=str(tmp_path / "ours"),
             HF_HUB_DISABLE_TELEMETRY="1", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    return e


def run(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([cli(), "run", *args, "--image", str(DEMO_IMAGE), "-p", DEMO_PROMPT, "--temp", "0",
                           "-n", "8", "-t", "2"], env=env, capture_output=True, text=True, timeout=timeout)


def resolves(mirror: Mirror) -> list[str]:
    """The files the mirror sent (GET), in order."""
    return [p.rsplit("/", 1)[-1] for m, p, _ in mirror.log if m == "GET" and "/resolve/" in p]


def test_first_download_then_the_cache_without_network(mirror: Mirror, env: dict[str, str]) -> None:
    out = run(env, "-hf", f"{GGUF_REPO}:Q4_K_M")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ANSWER
    assert resolves(mirror) == ["ggml-model-Q4_K_M.gguf", "mmproj-model-f16.gguf"]  # nothing else fetched
    blobs = list((Path(env["HF_HOME"]) / "hub" / f"models--{GGUF_REPO.replace('/', '--')}" / "blobs").iterdir())
    assert len(blobs) == 2  # in huggingface_hub's own cache layout

    mirror.stop()  # the port now refuses connections
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(mirror.url.rsplit(":", 1)[1]))) != 0
    again = run(env, "-hf", f"{GGUF_REPO}:Q4_K_M")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == ANSWER
    offline = run({**env, "HF_HUB_OFFLINE": "1"}, "-hf", f"{GGUF_REPO}:Q4_K_M")
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.strip() == ANSWER
    # a quantization never downloaded is not in the cache: a clear error, not a hang
    missing = run({**env, "HF_HUB_OFFLINE": "1"}, "-hf", f"{GGUF_REPO}:Q8_0")
    assert missing.returncode == 1
    assert "'Q8_0'" in missing.stderr and "offline" in missing.stderr and "Traceback" not in missing.stderr


def test_default_quantization_is_q4_k_m(mirror: Mirror, env: dict[str, str]) -> None:
    out = run(env, "-hf", GGUF_REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ANSWER
    assert resolves(mirror) == ["ggml-model-Q4_K_M.gguf", "mmproj-model-f16.gguf"]


def test_interrupted_download_resumes(mirror: Mirror, env: dict[str, str], repos) -> None:
    """The connection drops 1.5 MB into the 2.2 MB Q8_0 file: the run stops with an error that says so, and the next
    run asks only for the rest (a Range request from where the saved bytes end) instead of starting again, and gets
    the file whole. huggingface_hub saves a download in units of 10 MiB, more than these files: the child runs the
    command with that unit at 1 MiB, the rest as a user runs it."""
    name, data = "ggml-model-Q8_0.gguf", repos[GGUF_REPO].files["ggml-model-Q8_0.gguf"]
    assert len(data) > 1_500_000
    mirror.cuts[name] = Cut(after=1_500_000, times=1)
    code = ("import sys; import huggingface_hub.constants as c; c.DOWNLOAD_CHUNK_SIZE = 1 << 20\n"
            "from minicpmv_edge.cli import main; sys.exit(main(sys.argv[1:]))")
    args = [sys.executable, "-c", code, "run", "-hf", f"{GGUF_REPO}:Q8_0", "--image", str(DEMO_IMAGE), "-p",
            DEMO_PROMPT, "--temp", "0", "-n", "8", "-t", "2"]
    first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 1
    assert name in first.stderr and "resume" in first.stderr and "Traceback" not in first.stderr
    assert mirror.gets(name) == [None]
    mirror.log.clear()
    second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == ANSWER
    assert mirror.gets(name) == [f"bytes={1 << 20}-"]
    want = hashlib.sha256(data).hexdigest()
    got = Path(env["HF_HOME"]) / "hub" / f"models--{GGUF_REPO.replace('/', '--')}" / "blobs" / want
    assert hashlib.sha256(got.read_bytes()).hexdigest() == want


def test_wrong_quantization_names_those_there_are(mirror: Mirror, env: dict[str, str]) -> None:
    out = run(env, "-hf", f"{GGUF_REPO}:Q9_K")
    assert out.returncode == 1
    assert "'Q9_K'" in out.stderr and "Q4_K_M (ggml-model-Q4_K_M.gguf)" in out.stderr and "Q8_0" in out.stderr
    assert "Traceback" not in out.stderr
    assert resolves(mirror) == []  # nothing downloaded


def test_repository_without_mmproj(mirror: Mirror, env: dict[str, str], demo_f16) -> None:
    out = run(env, "-hf", "test/no-mmproj-gguf")
    assert out.returncode == 1
    assert "test/no-mmproj-gguf has no mmproj" in out.stderr and "--mmproj" in out.stderr
    assert resolves(mirror) == []
    given = run(env, "-hf", "test/no-mmproj-gguf", "--mmproj", str(demo_f16[1]))  # llama.cpp's way: a local one
    assert given.returncode == 0, given.stderr
    assert given.stdout.strip() == ANSWER


def test_truncated_file_is_refused_before_loading(mirror: Mirror, env: dict[str, str]) -> None:
    out = run(env, "-hf", "test/truncated-gguf")
    assert out.returncode == 1
    assert "test/truncated-gguf/ggml-model-Q4_K_M.gguf is not a usable model file" in out.stderr
    assert "truncated" in out.stderr and "Traceback" not in out.stderr
    mm = run(env, "-hf", "test/truncated-mmproj-gguf")
    assert mm.returncode == 1
    assert "test/truncated-mmproj-gguf/mmproj-model-f16.gguf is not a usable mmproj file" in mm.stderr
    assert "truncated" in mm.stderr and "Traceback" not in mm.stderr


def test_several_mmproj_files_take_the_one_of_the_same_quantization(mirror: Mirror, env: dict[str, str]) -> None:
    out = run(env, "-hf", "test/two-mmproj-gguf:Q8_0")
    assert out.returncode == 0, out.stderr  # the f16 one is broken on purpose: taking it would fail
    assert resolves(mirror) == ["MiniCPM-V-Q8_0.gguf", "mmproj-MiniCPM-V-Q8_0.gguf"]


def test_unknown_repository(env: dict[str, str]) -> None:
    out = run(env, "-hf", "nobody/nothing-gguf")
    assert out.returncode == 1
    assert "nobody/nothing-gguf: no such model" in out.stderr and "Traceback" not in out.stderr
    bad = run(env, "-hf", "not a name")
    assert bad.returncode == 1 and "is not a Hub model name" in bad.stderr


def _api(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)


def _ask(name: str, quant: str | None) -> str:
    """A child's program: from_pretrained, then the demo question about the demo picture."""
    return ("from pathlib import Path\nfrom minicpmv_edge import MiniCPMV\n"
            f"with MiniCPMV.from_pretrained({name!r}, {quant!r}, n_threads=2) as m:\n"
            f"    print(m.chat([{{'role': 'user', 'content': [Path({str(DEMO_IMAGE)!r}), {DEMO_PROMPT!r}]}}],\n"
            "                 temperature=0, max_new_tokens=8))\n")


def test_original_repository_is_converted_once(mirror: Mirror, env: dict[str, str]) -> None:
    first = _api(env, _ask(ORIGINAL_REPO, None))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == ANSWER
    got = set(resolves(mirror))
    assert "model.safetensors" in got and "config.json" in got
    assert "modeling_minicpmv.py" not in got and "loss.png" not in got  # no remote code, nothing it does not read
    assert "pytorch_model.bin" not in got  # the safetensors serve
    converted = list((Path(env["MINICPMV_EDGE_CACHE"]) / "hub").rglob("*.gguf"))
    assert sorted(p.name for p in converted) == ["mmproj-model-f16.gguf", "model-f16.gguf"]
    stamps = {p: p.stat().st_mtime_ns for p in converted}

    mirror.log.clear()
    second = _api(env, _ask(ORIGINAL_REPO, "f16"))
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == ANSWER
    assert resolves(mirror) == []  # the conversion came from the cache: nothing downloaded,
    assert {p: p.stat().st_mtime_ns for p in converted} == stamps  # nothing written again
    mirror.stop()
    offline = _api(env, _ask(ORIGINAL_REPO, None))
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.strip() == ANSWER

    quantized = _api(env, _ask(ORIGINAL_REPO, "q4_k_m"))  # llama.cpp's type: needs no network
    assert quantized.returncode == 0, quantized.stderr
    assert quantized.stdout.strip() == ANSWER
    wrong = _api(env, _ask(ORIGINAL_REPO, "Q9"))
    assert wrong.returncode == 1 and "not 'Q9'" in wrong.stderr


def test_original_repository_of_a_torch_pickle(mirror: Mirror, env: dict[str, str], tiny_hf, converted) -> None:
    """OmniLMM's release holds its weights as one pytorch_model.bin: downloaded (only there is no safetensors),
    converted without running code, and the answer is the one the locally converted files give."""
    from minicpmv_edge.chat import MiniCPMV
    from minicpmv_edge.demo import DEMO_IMAGE as IMG

    got = _api(env, _ask(PICKLE_REPO, None))
    assert got.returncode == 0, got.stderr
    assert "pytorch_model.bin" in resolves(mirror)
    local = converted("omnilmm", "f16")
    with MiniCPMV(local.model, local.mmproj, n_threads=2) as m:
        want = m.chat([{"role": "user", "content": [IMG, DEMO_PROMPT]}], temperature=0, max_new_tokens=8)
    assert got.stdout.strip() == want


def test_from_pretrained_gguf_and_its_quant_argument(mirror: Mirror, env: dict[str, str]) -> None:
    out = _api(env, _ask(GGUF_REPO, "Q8_0"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ANSWER
    assert resolves(mirror) == ["ggml-model-Q8_0.gguf", "mmproj-model-f16.gguf"]


def test_serve_with_hf(mirror: Mirror, env: dict[str, str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([cli(), "serve", "-hf", GGUF_REPO, "--port", str(port), "-t", "2"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.5)
        assert [m["id"] for m in r.json()["data"]] == [GGUF_REPO]
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert resolves(mirror) == ["ggml-model-Q4_K_M.gguf", "mmproj-model-f16.gguf"]
