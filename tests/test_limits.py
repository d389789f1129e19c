"""Huge and hostile inputs: every one ends in an answer or a clear error within a stated memory bound, measured in
a fresh child process, and a low address-space limit gives MemoryError, never an abort."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import run_measured
from PIL import Image

from minicpmv_edge import ImageError, SliceConfig, slice_image
from minicpmv_edge._native import _core

_CHAT = r"""
import sys
from pathlib import Path
from minicpmv_edge import EmbeddingCache, MiniCPMV
m = MiniCPMV(sys.argv[1], sys.argv[2], n_threads=2, cache=EmbeddingCache(max_bytes=0))
try:
    m.chat([{"role": "user", "content": [Path(sys.argv[3]), "What is it?"]}], max_new_tokens=3, temperature=0)
    print("answer", m.last.pieces)
except ValueError as e:
    print("error", type(e).__name__, e)
"""


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("huge")
    rng = np.random.default_rng(0)
    out = {"tall": d / "tall.png", "taller": d / "taller.png", "wide": d / "20000.png", "bomb": d / "bomb.png",
           "strip": d / "strip.png"}
    Image.fromarray(rng.integers(0, 256, (60_000, 1, 3), dtype=np.uint8)).save(out["tall"])  # 1 x 60,000
    Image.fromarray(rng.integers(0, 256, (1_000_000, 1, 3), dtype=np.uint8)).save(out["taller"])  # 1 x 1,000,000
    Image.new("RGB", (20000, 20000), (10, 200, 30)).save(out["wide"])  # 400 Mpx, 1.2 MB of PNG
    Image.new("1", (30000, 30000)).save(out["bomb"])  # 900 Mpx in 110 kB
    Image.fromarray(rng.integers(0, 256, (20000, 2, 3), dtype=np.uint8)).save(out["strip"])  # one 3200-patch piece
    return out


@pytest.mark.parametrize(("name", "outcome", "bound_mb"), [
    ("tall", "error ImageError image 1x60000: piece 0 would be 14x109732 px = 7838 patches, more than "
             "max_patches 4096", 400),
    ("taller", "error ImageError", 400),
    ("wide", "error ImageError", 400),
    ("bomb", "error ImageError", 400),
    ("strip", "answer 1", 600),
])
def test_huge_images_answer_or_refuse_within_bounds(converted, images, name: str, outcome: str,
                                                    bound_mb: int) -> None:
    """Refused from the header or the slicing plan before pixels are resized; the one that fits is encoded."""
    res = converted("2.6", "f16")
    out, peak = run_measured([sys.executable, "-c", _CHAT, str(res.model), str(res.mmproj), str(images[name])],
                             timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().startswith(outcome), out.stdout
    if name in ("wide", "bomb"):
        assert "max_pixels" in out.stdout
    if name == "taller":  # refused from the header: longer than max_side
        assert "1x1000000 has a side longer than the limit of 65535 pixels (max_side)" in out.stdout
    assert 0 < peak < bound_mb, peak


def test_the_patch_limit_is_checked_on_the_plan() -> None:
    """Aspect ratios up to about 1000:1 slice into ordinary pieces; the limit names the numbers otherwise."""
    for w, h in [(4000, 500), (100, 1000), (300, 20000), (1, 5000), (9000, 2)]:
        grid, pieces = (p := _core.plan_slices(w, h, 9, 448, 14)).grid, p.pieces
        assert max((a // 14) * (b // 14) for a, b in pieces) <= 4096, (w, h, grid)
    img = np.zeros((1, 60_000, 3), np.uint8)  # 60000 x 1: within max_side, never resized
    with pytest.raises(ImageError, match=r"image 60000x1: piece \d+ would be .* patches, more than max_patches 4096"):
        slice_image(img)
    with pytest.raises(ImageError, match=r"image array: 80000x1 has a side longer than the limit of 65535"):
        slice_image(np.zeros((1, 80_000, 3), np.uint8))
    with pytest.raises(ImageError, match="more than max_patches 100"):
        slice_image(np.zeros((448, 448, 3), np.uint8), SliceConfig(max_patches=100))


def test_large_piece_scratch_is_bounded(converted) -> None:
    """The BLAS attention works a tile of query rows at a time: its scratch does not grow with the piece."""
    from minicpmv_edge.encoder import VisionEncoder

    enc = VisionEncoder(converted("2.6", "f32").mmproj, n_threads=2)
    rng = np.random.default_rng(0)
    enc.encode([rng.uniform(-1, 1, (3, 14 * 32, 14 * 32)).astype(np.float32)])
    small = enc.native.scratch_bytes
    enc.encode([rng.uniform(-1, 1, (3, 14 * 2, 14 * 2000)).astype(np.float32)])  # 4000 patches
    assert enc.native.scratch_bytes <= 2 * (4 << 20) + small  # two threads' 4 MiB score tiles at most
    with pytest.raises(ValueError, match="4500 patches, more than max_patches 4096"):
        enc.encode([np.zeros((3, 14 * 3, 14 * 1500), np.float32)])


def test_position_ids_beyond_the_1d_rule_are_refused() -> None:
    """2.5's float32 arange gives too few values past about 10^6 patches: an error, not a read past the end."""
    with pytest.raises(ValueError, match="beyond the 1-D position rule"):
        _core.position_ids(1, 3_000_000, 70, _core.PosRule.flat_1d)
    assert len(_core.position_ids(7, 9, 70, _core.PosRule.flat_1d)) == 63


_LOW_LIMIT = r"""
import resource, sys
from pathlib import Path
import psutil
from minicpmv_edge import EmbeddingCache, MiniCPMV
m = MiniCPMV(sys.argv[1], sys.argv[2], n_threads=2, cache=EmbeddingCache(max_bytes=0))
m.chat([{"role": "user", "content": "warm up"}], max_new_tokens=2)
limit = psutil.Process().memory_info().vms + (int(sys.argv[4]) << 20)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
for _ in range(2):
    try:
        m.chat([{"role": "user", "content": [Path(sys.argv[3]), "What?"]}], max_new_tokens=3)
        print("answer")
    except MemoryError as e:
        print("MemoryError", e)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is enforced by Linux only (macOS ignores it)")
@pytest.mark.parametrize("margin_mb", [0, 2, 5, 10, 20, 40])
def test_a_low_address_space_limit_gives_memory_error(converted, images, margin_mb: int) -> None:
    res = converted("2.6", "f16")
    out = subprocess.run([sys.executable, "-c", _LOW_LIMIT, str(res.model), str(res.mmproj), str(images["strip"]),
                          str(margin_mb)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and all(line == "answer" or line.startswith("MemoryError") for line in lines), lines
    assert margin_mb > 20 or any(line.startswith("MemoryError") for line in lines)
