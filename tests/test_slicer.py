"""The C++ slicer against the original processor's rules (`image_processing_minicpmv.py`, re-implemented in
tests/reference/slicing.py) and against Pillow's pixels."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import cli
from PIL import Image, ImageOps

from minicpmv_edge._native import _core
from minicpmv_edge.image import ImageError, load_rgb
from minicpmv_edge.slicer import SliceConfig, plan, slice_image
from reference import slicing as ref

pytestmark = pytest.mark.arm64  # the outcome depends on the CPU or the aarch64 wheels

# worked examples of the original processor: input (W, H) -> grid [cols, rows] and tgt_sizes (h, w) in patches
WORKED = [
    ((448, 448), None, [(32, 32)]),
    ((300, 200), None, [(26, 39)]),
    ((100, 1000), None, [(101, 10)]),
    ((449, 449), (1, 2), [(32, 32)] + [(23, 45)] * 2),
    ((640, 480), (2, 1), [(28, 37)] + [(39, 26)] * 2),
    ((1024, 768), (2, 2), [(28, 37)] * 5),
    ((1344, 1344), (3, 3), [(32, 32)] * 10),
    ((1920, 1080), (4, 2), [(24, 43)] + [(34, 30)] * 8),
    ((800, 3000), (2, 4), [(62, 16)] + [(44, 23)] * 8),
    ((4000, 500), (8, 1), [(11, 90)] + [(32, 32)] * 8),
]


@pytest.mark.parametrize(("size", "grid", "tgt"), WORKED)
def test_worked_examples(size, grid, tgt) -> None:
    g, pieces = plan(*size)
    assert g == grid
    assert [(h // 14, w // 14) for w, h in pieces] == tgt


def _random_sizes(n: int, seed: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    sizes = [(1, 1), (1, 5000), (5000, 1), (8000, 8000), (8000, 1), (1, 8000), (448, 448), (449, 449),
             (448, 449), (14, 14), (13, 13), (896, 448), (2, 100000 // 20), (7, 7999)]
    log_sides = rng.uniform(0, np.log(8000), (n, 2))
    sizes += [tuple(int(v) for v in np.clip(np.exp(s).round(), 1, 8000)) for s in log_sides]
    sizes += [tuple(int(v) for v in rng.integers(1, 8001, 2)) for _ in range(n // 4)]
    return sizes


@pytest.mark.parametrize("max_slice_nums", [9, 1, 2, 4])
def test_plans_match_the_reference_on_random_sizes(max_slice_nums: int) -> None:
    sizes = _random_sizes(2000, seed=max_slice_nums)
    assert len(sizes) >= 2000
    for w, h in sizes:
        want_grid, want = ref.plan((w, h), max_slice_nums)
        got_grid, got = plan(w, h, SliceConfig(max_slice_nums=max_slice_nums))
        assert (got_grid, got) == ((tuple(want_grid) if want_grid else None), want), (w, h)


def _photo(w: int, h: int, seed: int) -> np.ndarray:
    """Smooth structure plus noise: exercises both flat and busy regions of the filter."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 120 * np.sin(xx / (7 + seed % 13)), 128 + 120 * np.cos(yy / 11),
                     255 * (xx + yy) / max(w + h, 1)], -1)
    return np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)


def _image_cases() -> list[tuple[int, int, int, int]]:
    rng = np.random.default_rng(7)
    cases = [(1, 1, 9, 0), (1, 700, 9, 1), (700, 1, 9, 2), (3, 2500, 9, 3), (449, 449, 9, 4), (1344, 1344, 9, 5),
             (2000, 300, 9, 6), (640, 480, 2, 7), (1280, 720, 1, 8), (100, 100, 9, 9)]
    for i in range(50):
        w, h = (int(v) for v in np.exp(rng.uniform(np.log(8), np.log(2200), 2)))
        cases.append((w, h, int(rng.choice([9, 9, 9, 2, 1, 4])), 100 + i))
    return cases


@pytest.mark.parametrize(("w", "h", "max_slices", "seed"), _image_cases())
def test_pixels_equal_pillow(w: int, h: int, max_slices: int, seed: int) -> None:
    arr = _photo(w, h, seed)
    s = slice_image(arr, SliceConfig(max_slice_nums=max_slices, n_threads=2))
    want = ref.pieces(Image.fromarray(arr), max_slices)
    assert len(s.pieces_u8) == len(want)
    for got, exp in zip(s.pieces_u8, want, strict=True):
        assert got.shape == exp.shape
        assert np.array_equal(got, exp), (np.abs(got.astype(int) - exp).max(), (got != exp).mean())
    for got, exp in zip(s.pieces(), want, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, ref.normalize(exp), rtol=0, atol=1e-6)
    assert s.patch_grids == [(p.shape[0] // 14, p.shape[1] // 14) for p in want]


def test_resize_matches_pillow_for_any_scale() -> None:
    rng = np.random.default_rng(3)
    for _ in range(60):
        w, h = (int(v) for v in rng.integers(1, 700, 2))
        ow, oh = (int(v) for v in rng.integers(1, 900, 2))
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        want = np.asarray(Image.fromarray(a).resize((ow, oh), Image.Resampling.BICUBIC))
        assert np.array_equal(_core.resize_bicubic(a, ow, oh, 3), want), ((w, h), (ow, oh))


def test_thread_count_does_not_change_pixels() -> None:
    arr = _photo(1500, 1100, 1)
    runs = [slice_image(arr, SliceConfig(n_threads=t)).pieces_u8 for t in (1, 2, 3, 8)]
    for other in runs[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(runs[0], other, strict=True))


# ---- inputs ----

def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_all_input_kinds_give_the_same_pieces(tmp_path: Path) -> None:
    arr = _photo(640, 480, 2)
    png = _encode(Image.fromarray(arr), "PNG")
    (tmp_path / "x.png").write_bytes(png)
    results = [slice_image(x).pieces_u8 for x in (arr, Image.fromarray(arr), png, bytearray(png),
                                                   tmp_path / "x.png", str(tmp_path / "x.png"))]
    for r in results[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(results[0], r, strict=True))


def test_exif_orientation_is_applied() -> None:
    arr = _photo(300, 200, 4)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = _encode(Image.fromarray(arr), "JPEG", exif=exif, quality=95)
    got = load_rgb(data)
    want = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert got.shape == (300, 200, 3)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "1", "I", "F", "PA"])
def test_modes_convert_as_pillow_does(mode: str) -> None:
    base = Image.fromarray(_photo(90, 60, 5))
    img = base.convert(mode) if mode not in ("I;16", "PA") else base.convert("L").convert(mode)
    want = np.asarray(img.convert("RGB"))
    assert np.array_equal(load_rgb(img), want)
    if mode in ("L", "LA", "P", "RGBA", "CMYK"):  # formats that store the mode: decoding agrees too
        fmt = "TIFF" if mode == "CMYK" else "PNG"
        assert np.array_equal(load_rgb(_encode(img, fmt)), want)


def test_numpy_layouts() -> None:
    rgb = _photo(40, 30, 6)
    rgba = np.concatenate([rgb, np.full((30, 40, 1), 7, np.uint8)], axis=2)
    gray = rgb[:, :, 0]
    assert np.array_equal(load_rgb(rgba), np.asarray(Image.fromarray(rgba).convert("RGB")))
    assert np.array_equal(load_rgb(gray), np.asarray(Image.fromarray(gray).convert("RGB")))
    assert np.array_equal(load_rgb(rgb[:, ::2]), rgb[:, ::2])  # non-contiguous views are fine


# ---- bad input ----

def _bad_input(kind: str, tmp: Path):
    png = _encode(Image.fromarray(_photo(200, 150, 3)), "PNG")
    jpg = _encode(Image.fromarray(_photo(200, 150, 3)), "JPEG")
    (tmp / "notes.txt").write_text("these are not pixels\n" * 20)
    return {
        "empty array": (np.zeros((0, 0, 3), np.uint8), "empty image"),
        "empty PIL image": (Image.new("RGB", (0, 0)), "empty image"),
        "float array": (np.zeros((4, 4, 3), np.float32), "dtype float32"),
        "bad shape": (np.zeros((4, 4, 5), np.uint8), "shape"),
        "truncated png": (png[: len(png) // 2], "truncated or corrupt"),
        "truncated jpeg": (jpg[: len(jpg) // 2], "truncated or corrupt"),
        "corrupt png": (png[:60] + bytes(b ^ 0xFF for b in png[60:200]) + png[200:], "truncated or corrupt"),
        "random bytes": (np.random.default_rng(0).bytes(5000), "unknown format or corrupt header"),
        "text file": (tmp / "notes.txt", "unknown format or corrupt header"),
        "missing file": (tmp / "absent.png", "file not found"),
        "directory": (tmp, "is a directory"),
    }[kind]


@pytest.mark.parametrize("kind", ["empty array", "empty PIL image", "float array", "bad shape", "truncated png",
                                  "truncated jpeg", "corrupt png", "random bytes", "text file", "missing file",
                                  "directory"])
def test_bad_inputs_raise_clear_errors(tmp_path: Path, kind: str) -> None:
    value, message = _bad_input(kind, tmp_path)
    with pytest.raises(ImageError, match=message):
        slice_image(value)


def test_pixel_limit_is_configurable() -> None:
    arr = _photo(300, 200, 8)
    png = _encode(Image.fromarray(arr), "PNG")
    for value in (arr, png, Image.fromarray(arr)):
        with pytest.raises(ImageError, match="60000 pixels is more than the limit of 59999"):
            slice_image(value, SliceConfig(max_pixels=59999))
        assert slice_image(value, SliceConfig(max_pixels=60000)).grid is None


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="max_slice_nums"):
        SliceConfig(max_slice_nums=0)
    with pytest.raises(ValueError, match="size must be positive"):
        _core.plan_slices(0, 10, 9, 448, 14)
    with pytest.raises(ValueError, match="RGB image array"):
        _core.slice_pieces(np.zeros((4, 4), np.uint8), 9, 448, 14, 1)
    with pytest.raises(TypeError, match="unsupported image input"):
        slice_image(12345)  # type: ignore[arg-type]


# ---- command line ----

def test_cli_json_and_saved_pieces(tmp_path: Path) -> None:
    arr = _photo(1024, 768, 9)
    Image.fromarray(arr).save(tmp_path / "in.png")
    out = subprocess.run([cli(), "slice", str(tmp_path / "in.png"), "--json", "--save-dir", str(tmp_path / "p")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    obj = json.loads(out.stdout)  # exactly one JSON document on stdout
    assert obj == {"grid": [2, 2], "pieces": [{"width": 518, "height": 392, "tokens": 64}] * 5, "tokens": 320}
    want = ref.pieces(Image.fromarray(arr))
    saved = sorted((tmp_path / "p").iterdir())
    assert [p.name for p in saved] == [f"piece_{i:02d}.png" for i in range(5)]
    for p, w in zip(saved, want, strict=True):
        assert np.array_equal(np.asarray(Image.open(p)), w)


def test_cli_text_and_options(tmp_path: Path) -> None:
    Image.fromarray(_photo(1920, 1080, 10)).save(tmp_path / "in.jpg")
    out = subprocess.run([cli(), "slice", str(tmp_path / "in.jpg"), "--max-slices", "2", "--model-version", "2.5"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "grid 2x1" in out.stdout and "288 image tokens" in out.stdout  # 3 pieces x 96
    out = subprocess.run([cli(), "slice", str(tmp_path / "in.jpg"), "--json", "--max-slices", "1"],
                         capture_output=True, text=True, timeout=120)
    assert json.loads(out.stdout)["grid"] is None
    bad = subprocess.run([cli(), "slice", str(tmp_path / "missing.jpg")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "file not found" in bad.stderr and "Traceback" not in bad.stderr
