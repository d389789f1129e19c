"""Fuzzing, bounded and seeded: mutated language-model and mmproj GGUF headers, odd images, videos and messages.
Every case must end in an answer or a clear Python exception, in a child process that never dies by a signal.
MINICPMV_FUZZ_CASES=N runs N file cases of each kind (default 400)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fuzzing import gguf_mutations, odd_images, odd_messages, run_cases

N_CASES = int(os.environ.get("MINICPMV_FUZZ_CASES", "400"))

# Exceptions that are a clear refusal (the runtime's own errors derive from ValueError); anything else is a bug.
_CHILD = r"""
import json, sys, tempfile
from pathlib import Path
job = json.loads(sys.stdin.read())
from minicpmv_edge import MiniCPMV, Image
from minicpmv_edge.encoder import VisionEncoder
import numpy as np
CLEAR = (ValueError, TypeError, OSError, MemoryError)
tmp = Path(tempfile.mkdtemp())
for i in range(job["start"], len(job["cases"])):
    case = job["cases"][i]
    print("START", i, flush=True)
    try:
        if case["kind"] in ("lm", "mmproj"):
            src = Path(case["src"])
            data = bytearray(src.read_bytes())
            for at, hexb in case["patches"]:
                b = bytes.fromhex(hexb)
                data[at : at + len(b)] = b
            if case["truncate"] is not None:
                del data[case["truncate"]:]
            path = tmp / src.name
            path.write_bytes(bytes(data))
            other = Path(case["other"])
            model, mmproj = (path, other) if case["kind"] == "lm" else (other, path)
            with MiniCPMV(model, mmproj, n_threads=1, n_ctx=512) as m:
                text = m.chat([{"role": "user", "content": [Image(np.full((28, 28, 3), 128, np.uint8)), "hi"]}],
                              max_new_tokens=3, temperature=0)
            result = "answer"
        else:
            result = "answer"
    except CLEAR as e:
        if isinstance(e, UnicodeError) or not str(e):
            result = "UNCLEAR " + type(e).__name__ + ": " + repr(str(e))[:200]
        else:
            result = "error " + type(e).__name__
            if case["kind"] in ("lm", "mmproj") and str(path) not in str(e) and not isinstance(e, MemoryError):
                result = "UNNAMED " + type(e).__name__ + ": " + str(e)[:200]
    except Exception as e:
        result = "UNCLEAR " + type(e).__name__ + ": " + str(e)[:200]
    print("END", i, result, flush=True)
"""


def _file_cases(converted, kind: str, version: str, seed: int, n: int) -> list[dict]:
    res = converted(version, "f16")
    src, other = (res.model, res.mmproj) if kind == "lm" else (res.mmproj, res.model)
    return [{"kind": kind, "name": m.name, "src": str(src), "other": str(other),
             "patches": [(at, b.hex()) for at, b in m.patches], "truncate": m.truncate}
            for m in gguf_mutations(src, seed, n)]


@pytest.mark.parametrize("version", ["2.6", "2.0"])  # BPE and qwen2; SentencePiece, minicpm and a timm tower
@pytest.mark.parametrize("kind", ["lm", "mmproj"])
def test_mutated_gguf_files_never_kill_the_process(converted, kind: str, version: str) -> None:
    cases = _file_cases(converted, kind, version, seed={"lm": 1, "mmproj": 2}[kind] + 10 * (version == "2.0"),
                        n=N_CASES // (2 if version == "2.0" else 1))
    out = run_cases(_CHILD, {"cases": cases}, len(cases), timeout=1800)
    crashed = [(cases[i]["name"], sig) for i, sig in out["crashed"]]
    assert not crashed, crashed
    unclear = [(cases[i]["name"], r) for i, r in out["results"] if r.startswith(("UNCLEAR", "UNNAMED"))]
    assert not unclear, unclear
    assert len(out["results"]) == len(cases)
    kinds = {r.split()[0] for _, r in out["results"]}
    assert "error" in kinds  # the mutations do damage: most are refused


_INPUTS_CHILD = r"""
import json, sys, pickle, base64
job = json.loads(sys.stdin.read())
from minicpmv_edge import MiniCPMV, EmbeddingCache
cases = pickle.loads(base64.b64decode(job["blob"]))
m = MiniCPMV(job["model"], job["mmproj"], n_threads=1, n_ctx=2048, cache=EmbeddingCache(max_bytes=0))
CLEAR = (ValueError, TypeError, OSError, MemoryError)
for i in range(job["start"], len(cases)):
    name, msgs = cases[i]
    print("START", i, flush=True)
    try:
        m.chat(msgs, max_new_tokens=2, temperature=0)
        result = "answer"
    except CLEAR as e:
        result = ("UNCLEAR " if isinstance(e, UnicodeError) or not str(e) else "error ") + type(e).__name__ + \
                 ": " + str(e)[:160]
    except Exception as e:
        result = "UNCLEAR " + type(e).__name__ + ": " + str(e)[:160]
    print("END", i, result.replace("\n", " "), flush=True)
"""


def test_odd_images_videos_and_messages(converted, tmp_path: Path) -> None:
    import base64
    import pickle

    from test_video_cache import make_clip

    res = converted("2.6", "f16")
    cases: list = []
    for name, img in odd_images(tmp_path, seed=3):
        cases.append((f"image {name}", [{"role": "user", "content": [img, "What is it?"]}]))
    clip = make_clip(tmp_path / "ok.mp4", seconds=2, fps=4, w=64, h=48).read_bytes()
    videos = {"cut": clip[: len(clip) // 2], "head": clip[:64], "noise": os.urandom(3000), "empty": b"",
              "text": b"hello\n" * 50, "flipped": clip[:100] + bytes(b ^ 0xA5 for b in clip[100:400]) + clip[400:]}
    for name, data in videos.items():
        for suffix in (".mp4", ".ts", ".mkv"):
            p = tmp_path / f"v_{name}{suffix}"
            p.write_bytes(data)
            cases.append((f"video {name}{suffix}", [{"role": "user", "content": [p, "What happens?"]}]))
    for name, msgs in odd_messages():
        cases.append((f"message {name}", msgs))
    blob = base64.b64encode(pickle.dumps(cases)).decode()  # PIL images and arrays travel pickled
    out = run_cases(_INPUTS_CHILD, {"blob": blob, "model": str(res.model), "mmproj": str(res.mmproj)}, len(cases),
                    timeout=900)
    crashed = [(cases[i][0], sig) for i, sig in out["crashed"]]
    assert not crashed, crashed
    unclear = [(cases[i][0], r) for i, r in out["results"] if r.startswith("UNCLEAR")]
    assert not unclear, unclear
    results = dict(out["results"])
    assert len(results) == len(cases)
    by_name = {cases[i][0]: r for i, r in results.items()}
    assert by_name["image bomb"].startswith("error ImageError") and "max_pixels" in by_name["image bomb"]
    assert by_name["image 1x1"] == "answer" and by_name["image mode CMYK"] == "answer"
    assert by_name["video cut.ts"].startswith("error VideoError")
