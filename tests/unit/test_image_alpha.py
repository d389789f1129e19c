"""load_rgb's transparency rules (alpha="drop": Image.convert("RGB"), MiniCPM-V 2.6 and older; "white": composited
onto white, MiniCPM-V 4.6's processor) and the validation of SliceConfig's 4.6 options. No torch here: the RGBA
array arithmetic is checked against torch in tests/test_v4_6_pixels.py."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from minicpmv_edge._native import _core
from minicpmv_edge.image import load_rgb
from minicpmv_edge.slicer import SliceConfig, plan


def _white_composite(img: Image.Image) -> np.ndarray:
    """Pillow's composite onto an opaque white canvas (what transformers' convert_to_rgb does for PIL images)."""
    rgba = img.convert("RGBA")
    return np.asarray(Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB"))


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _images() -> dict[str, Image.Image]:
    rng = np.random.default_rng(5)
    rgba = Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8), "RGBA")
    la = Image.fromarray(rng.integers(0, 256, (20, 30, 2), dtype=np.uint8), "LA")
    p = Image.fromarray(rng.integers(0, 8, (20, 30), dtype=np.uint8), "P")
    p.putpalette(rng.integers(0, 256, 8 * 3, dtype=np.uint8).tolist())
    p.info["transparency"] = 2
    keyed = Image.fromarray(rng.integers(0, 2, (20, 30, 3), dtype=np.uint8) * 200, "RGB")
    keyed.info["transparency"] = (200, 0, 200)
    return {"RGBA": rgba, "LA": la, "P + transparency": p, "RGB + transparency key": keyed}


@pytest.mark.parametrize("kind", list(_images()))
def test_white_composites_pil_images_and_files(kind: str) -> None:
    img = _images()[kind]
    want = _white_composite(img)
    assert not np.array_equal(want, np.asarray(img.convert("RGB")))  # the two rules differ on this image
    assert np.array_equal(load_rgb(img, alpha="white"), want)
    assert np.array_equal(load_rgb(_png(img), alpha="white"), want)  # the file keeps its alpha or its key
    assert np.array_equal(load_rgb(img), np.asarray(img.convert("RGB")))  # the default drops it


def test_white_leaves_opaque_images_alone() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    gray = rgb[:, :, 0]
    assert np.array_equal(load_rgb(rgb, alpha="white"), rgb)
    assert np.array_equal(load_rgb(Image.fromarray(rgb), alpha="white"), rgb)
    assert np.array_equal(load_rgb(gray, alpha="white"), np.repeat(gray[:, :, None], 3, axis=2))
    opaque = np.concatenate([rgb, np.full((9, 11, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(load_rgb(opaque, alpha="white"), rgb)
    assert np.array_equal(load_rgb(Image.fromarray(opaque, "RGBA"), alpha="white"), rgb)


def test_rgba_arrays() -> None:
    v, a = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8), indexing="ij")
    rgba = np.stack([v, 255 - v, v // 2, a], -1)
    got = load_rgb(rgba, alpha="white")
    assert got.shape == (256, 256, 3) and got.dtype == np.uint8 and got.flags.c_contiguous
    assert np.all(got[:, 0] == 255)  # transparent: white
    assert np.array_equal(got[:, 255], rgba[:, 255, :3])  # opaque: unchanged
    # transformers' torchvision arithmetic for arrays, within one step of Pillow's composite for PIL images
    assert np.abs(got.astype(int) - _white_composite(Image.fromarray(rgba, "RGBA"))).max() == 1
    assert np.array_equal(load_rgb(rgba), rgba[:, :, :3])  # the default drops alpha


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="alpha must be one of 'drop', 'white'"):
        load_rgb(np.zeros((4, 4, 3), np.uint8), alpha="black")
    with pytest.raises(ValueError, match="size_unit must be a multiple of patch_size 14"):
        SliceConfig(size_unit=50)
    with pytest.raises(ValueError, match="size_unit must be at least 0"):
        SliceConfig(size_unit=-56)
    with pytest.raises(TypeError, match="size_unit must be an integer"):
        SliceConfig(size_unit=56.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="preprocess must be one of 'pil', 'torchvision'"):
        SliceConfig(preprocess="torch")
    with pytest.raises(ValueError, match="preprocess must be one of"):
        SliceConfig(preprocess=None)  # type: ignore[arg-type]
    # the native layer's own checks
    with pytest.raises(ValueError, match="resize kind must be 'pil' or 'torch', got 'torchvision'"):
        _core.plan_slices(300, 200, 9, 448, 14, resize="torchvision")
    with pytest.raises(ValueError, match="unit 50: a multiple of patch_size"):
        _core.slice_pieces(np.zeros((4, 4, 3), np.uint8), 9, 448, 14, unit=50)
    with pytest.raises(ValueError, match="normalisation kind must be 'pil' or 'torch'"):
        _core.normalize_chw(np.zeros((4, 4, 3), np.uint8), [0.5] * 3, [0.5] * 3, kind="tv")


def test_config_rules() -> None:
    c = SliceConfig()
    assert (c.size_unit, c.preprocess, c.resize_kind, c.alpha) == (0, "pil", "pil", "drop")
    c = SliceConfig(size_unit=56, preprocess="torchvision")
    assert (c.resize_kind, c.alpha) == ("torch", "white")
    # the unit, not the resampler, sets the sizes: 300x200 -> 560x392 (16x), 560x364 (4x); 2.6: 546x364
    assert plan(300, 200, SliceConfig(size_unit=56))[1] == [(560, 392)]
    assert plan(300, 200, SliceConfig(size_unit=28, preprocess="torchvision"))[1] == [(560, 364)]
    assert plan(300, 200)[1] == [(546, 364)]
    # the existing positional calls keep their meaning
    assert _core.plan_slices(300, 200, 9, 448, 14).pieces == [(546, 364)]
    assert _core.plan_slices(300, 200, 9, 448, 14, False, 56, "torch").pieces == [(560, 392)]


def test_normalisation_rules() -> None:
    """pil: float64 x / 255, then float32 (x - mean) / std; torch: float32 (x - 255 mean) / (255 std)."""
    v = np.arange(256, dtype=np.uint8)
    piece = np.stack([v, v[::-1], v], -1)[None]  # 1 x 256
    mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    f = np.float32
    for m, s in ((mean, std), ([0.5] * 3, [0.5] * 3)):
        got = _core.normalize_chw(piece, m, s, kind="torch")
        want = np.stack([(piece[..., c].astype(f) - f(m[c]) * f(255)) / (f(s[c]) * f(255)) for c in range(3)])
        assert got.dtype == np.float32 and np.array_equal(got, want)
        got = _core.normalize_chw(piece, m, s)
        want = np.stack([(((piece[..., c] / 255.0).astype(f)) - f(m[c])) / f(s[c]) for c in range(3)])
        assert np.array_equal(got, want)
    # mean = std = 0.5: (x - 127.5) / 127.5, exactly -1 and 1 at the ends
    got = _core.normalize_chw(piece, [0.5] * 3, [0.5] * 3, kind="torch")
    assert got[0, 0, 0] == -1 and got[0, 0, 255] == 1 and got[0, 0, 128] == f(0.5) / f(127.5)
