"""The trained demo model (python/minicpmv_edge/data/demo-2.6): its task accuracy through our whole pipeline against
the PyTorch model's, its training script, and the bundled picture the demo asks about."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from minicpmv_edge.chat import MiniCPMV
from minicpmv_edge.convert import convert_checkpoint
from minicpmv_edge.demo import DEMO_CHECKPOINT, DEMO_IMAGE
from minicpmv_edge.shapes_task import COLORS, dataset, demo_item, describe, score
from reference.pipeline import reference_pipeline

ROOT = Path(__file__).resolve().parent.parent
HELD_OUT_SEED = 9000  # benchmarks/bench_accuracy.py's held-out set; these are its first 40 questions
MAX_NEW_TOKENS = 24


def test_accuracy_on_40_held_out_questions_is_the_pytorch_models(demo_f16: tuple[Path, Path]) -> None:
    items = dataset(HELD_OUT_SEED, 40)
    ref = reference_pipeline(DEMO_CHECKPOINT)
    want = [ref.decode(ref.generate(it.messages, n_tokens=MAX_NEW_TOKENS)[0]) for it in items]
    with MiniCPMV(*demo_f16, n_threads=2) as m:
        got = [m.chat(it.messages, temperature=0, repetition_penalty=1.0, max_new_tokens=MAX_NEW_TOKENS)
               for it in items]
    pytorch, ours = score(items, want), score(items, got)
    # chance is ~0.23 (1/18 shape, 1/6 colour, 1/4 count, 1/2 compare); the bundled checkpoint scores ~0.6
    assert pytorch["all"] >= 0.35, f"the bundled checkpoint does not know the task: {pytorch}"
    lost = [(it.kind, it.answer, w, g) for it, w, g in zip(items, want, got, strict=True) if w != g]
    assert ours["all"] >= pytorch["all"] - 0.02, (ours, pytorch, lost)


def test_the_bundled_picture_is_the_demo_question_s_picture() -> None:
    it = demo_item()
    drawn = np.asarray(it.messages[0]["content"][0])
    assert np.array_equal(np.asarray(Image.open(DEMO_IMAGE).convert("RGB")), drawn)
    assert it.answer == "Three."


def test_the_description_names_the_shapes_left_to_right_as_the_picture_shows_them() -> None:
    """describe() (the training aid) against the pixels: each colour's mean column, in order."""
    pixels = np.asarray(Image.open(DEMO_IMAGE).convert("RGB")).astype(int)
    columns = {}
    for name, rgb in COLORS.items():
        near = (np.abs(pixels - np.array(rgb)).max(axis=2) <= 12).nonzero()[1]
        if len(near) > 500:
            columns[name] = near.mean()
    order = sorted(columns, key=columns.get)
    assert order == ["purple", "yellow", "green"]
    assert describe(demo_item().pictures[0]) == "Three shapes: a purple triangle, a yellow square, a green circle."


def _train(out: Path) -> subprocess.CompletedProcess:
    args = ["--vision-steps", "3", "--steps", "3", "--batch", "2", "--val", "5", "--out", str(out)]
    return subprocess.run([sys.executable, str(ROOT / "tools" / "train_demo.py"), *args], capture_output=True,
                          text=True, timeout=600)


def test_the_training_script_is_deterministic_and_writes_an_original_checkpoint(tmp_path: Path) -> None:
    runs = [_train(tmp_path / f"run{i}") for i in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr[-3000:]
    a, b = (load_file(tmp_path / f"run{i}" / "model.safetensors") for i in range(2))
    assert a.keys() == b.keys() == load_file(DEMO_CHECKPOINT / "model.safetensors").keys()
    assert all(a[k].dtype == torch.bfloat16 and torch.equal(a[k], b[k]) for k in a)
    log = (tmp_path / "run0" / "train_log.txt").read_text()
    assert "held-out accuracy" in log and (tmp_path / "run0" / "loss.png").stat().st_size > 0
    assert not (tmp_path / "run0.training").exists()
    res = convert_checkpoint(tmp_path / "run0", tmp_path / "gguf", "f32", progress=False)
    with MiniCPMV(res.model, res.mmproj, n_threads=2) as m:  # three steps in: any answer, but a working model
        assert isinstance(m.chat([{"role": "user", "content": [DEMO_IMAGE, "How many shapes are there?"]}],
                                 temperature=0, max_new_tokens=4), str)
