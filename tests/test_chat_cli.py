"""`minicpmv-edge run`, `chat` and `demo` driven through the installed entry point, as a user runs them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
from helpers import cli
from PIL import Image

from minicpmv_edge.chat import MiniCPMV
from minicpmv_edge.shapes_task import demo_item


def _img(path: Path, w: int, h: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_run_streams_the_same_answer_as_the_api(converted, tmp_path: Path) -> None:
    res = converted("2.6", "f16")
    a, b = _img(tmp_path / "a.png", 500, 400, 1), _img(tmp_path / "b.jpg", 300, 300, 2)
    out = subprocess.run([cli(), "run", "-m", str(res.model), "--mmproj", str(res.mmproj), "--image", str(a),
                          "--image", str(b), "-p", "Compare them.", "-n", "16", "--temp", "0", "-t", "2",
                          "--max-slices", "4"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "2 image(s)" in out.stderr and "prefill" in out.stderr and "tok/s" in out.stderr
    with MiniCPMV(res.model, res.mmproj, n_threads=2) as m:
        want = m.chat([{"role": "user", "content": [a, b, "Compare them."]}], temperature=0,
                      max_new_tokens=16, max_slice_nums=4)
    assert out.stdout.strip() == want


def test_run_with_2_0_files(converted, tmp_path: Path) -> None:
    res = converted("2.0", "f16")
    a = _img(tmp_path / "a.png", 640, 480, 1)
    out = subprocess.run([cli(), "run", "-m", str(res.model), "--mmproj", str(res.mmproj), "--image", str(a),
                          "-p", "What is it?", "-n", "12", "--temp", "0", "-t", "2"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    with MiniCPMV(res.model, res.mmproj, n_threads=2) as m:
        want = m.chat([{"role": "user", "content": [a, "What is it?"]}], temperature=0, max_new_tokens=12)
        assert m.version.name == "2.0" and m.last.pieces == 3  # 640x480: overview + 2 slices
    assert out.stdout.replace(" ", "").strip() == want.replace(" ", "")  # stream vs. the original's spacing


def test_run_errors_are_one_line(converted, tmp_path: Path) -> None:
    res = converted("2.6", "f16")
    out = subprocess.run([cli(), "run", "-m", str(res.model), "--mmproj", str(res.mmproj), "--image",
                          str(tmp_path / "missing.png"), "-p", "hi"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "file not found" in out.stderr and "Traceback" not in out.stderr


def test_interactive_chat_keeps_history(converted, tmp_path: Path) -> None:
    """Through the CLI: the second answer is the API's answer to the whole two-turn conversation."""
    res = converted("2.6", "f16")
    a = _img(tmp_path / "a.png", 320, 240, 3)
    script = f"/image {a}\nWhat is this?\nAnd the colours?\n/clear\nhello\n/image {tmp_path / 'nope.png'}\nbad\n/exit\n"
    out = subprocess.run([cli(), "chat", "-m", str(res.model), "--mmproj", str(res.mmproj), "-n", "8",
                          "--temp", "0", "-t", "2"], input=script, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    summaries = [line for line in out.stderr.splitlines() if "pieces encoded" in line]
    assert [s.split(",")[0] for s in summaries] == ["1 image(s)", "1 image(s)", "0 image(s)"]
    assert "(conversation cleared)" in out.stderr and "file not found" in out.stderr
    answers = out.stdout.splitlines()
    with MiniCPMV(res.model, res.mmproj, n_threads=2) as m:
        q1 = [{"role": "user", "content": [a, "What is this?"]}]
        first = m.chat(q1, temperature=0, max_new_tokens=8)
        second = m.chat([*q1, {"role": "assistant", "content": first}, {"role": "user", "content": "And the colours?"}],
                        temperature=0, max_new_tokens=8)
        third = m.chat([{"role": "user", "content": "hello"}], temperature=0, max_new_tokens=8)
    assert [x.strip() for x in answers[:3]] == [first, second, third]


def test_run_flags_for_offload_and_logging(converted, tmp_path: Path) -> None:
    """-ngl (llama.cpp's name; a CPU build offloads nothing) and -v, which shows llama.cpp's log lines."""
    res = converted("2.6", "f16")
    base = [cli(), "run", "-m", str(res.model), "--mmproj", str(res.mmproj), "-p", "hi", "-n", "4", "--temp", "0"]
    quiet = subprocess.run([*base, "-ngl", "99"], capture_output=True, text=True, timeout=120)
    loud = subprocess.run([*base, "--n-gpu-layers", "99", "-v"], capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr + loud.stderr
    assert quiet.stdout == loud.stdout
    assert "minicpmv_edge.llama: llama_model_loader" in loud.stderr
    assert "llama_model_loader" not in quiet.stderr


def test_demo_builds_once_and_chats_about_the_bundled_image(tmp_path: Path) -> None:
    env = {**os.environ, "MINICPMV_EDGE_CACHE": str(tmp_path)}
    runs = [subprocess.run([cli(), "demo", "-n", "12"], capture_output=True, text=True, env=env, timeout=600)
            for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr[-2000:]
        assert "1 image(s), 3 pieces encoded" in r.stderr and "demo.png" in r.stderr  # 750 x 492: overview + 2
        assert r.stdout.strip() == demo_item().answer == "Three."  # the trained model counts the shapes
    cached = list(tmp_path.glob("demo-*/gguf/*.gguf"))
    assert sorted(p.name for p in cached) == ["mmproj-model-f16.gguf", "model-f16.gguf"]


def test_run_with_a_video(converted, tmp_path: Path) -> None:
    from test_video_cache import make_clip

    res = converted("2.6", "f16")
    clip = make_clip(tmp_path / "c.mp4", seconds=3, fps=4, w=96, h=64)  # 12 frames at 4 fps: frames 0, 4, 8
    out = subprocess.run([cli(), "run", "-m", str(res.model), "--mmproj", str(res.mmproj), "--video", str(clip),
                          "-p", "What happens?", "-n", "6", "-t", "2"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "3 image(s), 3 pieces" in out.stderr
