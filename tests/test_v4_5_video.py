"""MiniCPM-V 4.5's video path: the temporal ("3-D") resampler against a PyTorch re-implementation of the original
(tests/reference/resampler_3d.py, written from the fact sheet §5.3), and the video recipe's time ids against a
numpy transcription of the model card's formula (§9)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from test_encoder import _pixels, _rel, _rewrite

from minicpmv_edge.encoder import VisionEncoder
from minicpmv_edge.families.v4_5.video import PackedSeconds
from reference.checkpoint import load_config, load_state
from reference.resampler_3d import Reference3DResampler
from reference.vision import reference_vision

KEY = "minicpmv_edge.resampler.temporal"
BOOL, U32 = gguf.GGUFValueType.BOOL, gguf.GGUFValueType.UINT32
# frame-piece grids (h, w) in patches, and packed units: (frame-piece indices, time ids); units of 1, 2 and 3
# frames, consecutive and non-consecutive ids, the trap ids 42 / 80 / 85 / 90, several piece sizes, and images
# (one piece, id -1)
GRIDS = [(16, 16), (16, 16), (16, 16), (12, 20), (12, 20), (12, 20), (9, 7), (9, 7), (16, 16), (5, 11)]
UNITS = [([0, 1, 2], [0, 3, 7]), ([3, 4], [42, 43]), ([5], [80]), ([6, 7], [85, 90]), ([8], [-1]), ([9], [-1]),
         ([4, 3, 5], [10, 13, 1700])]


@pytest.fixture(scope="module")
def temporal_mmproj(converted, tmp_path_factory) -> Path:
    """tiny-2.6's mmproj (4.5's resampler has the same weights and 2-D path) with the temporal key on."""
    src = converted("2.6", "f32").mmproj
    return _rewrite(src, tmp_path_factory.mktemp("v45") / "temporal.gguf", drop_keys=(KEY,),
                    set_keys={KEY: (True, BOOL)})


@pytest.fixture(scope="module")
def ref(tiny_hf):
    """The reference tower (per frame-piece) and the original 4.5 resampler on the same weights."""
    hf = tiny_hf["2.6"]
    return reference_vision(hf), Reference3DResampler(load_state(hf), load_config(hf)["hidden_size"])


# q8_0 against the f32 reference, the largest deviation over the largest value: int8 activations make it jumpy. The
# tiny tower's rows are few and narrow, so one activation rounding the other way moves it: a 1e-6 relative change
# of the GELU before fc2's quantization (measured, 2026-12-03) moved it by up to 0.011, and equally exact GELUs (the
# fused formula, ggml's f16 table) give 0.0164-0.0206 on these units. Per-row cosine (>= 0.999) is checked beside.
Q8_MAX_REL = 3e-2


def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def _reference(ref, pieces: list[np.ndarray], units, arrangement: str = "hf") -> np.ndarray:
    vision, resampler = ref
    feats = [vision.tower(p) for p in pieces]
    sizes = [(p.shape[1] // 14, p.shape[2] // 14) for p in pieces]
    return np.stack(resampler.units(feats, sizes, [u[0] for u in units], [u[1] for u in units], arrangement))


PIECES = [_pixels(h, w, i) for i, (h, w) in enumerate(GRIDS)]


@pytest.mark.parametrize("blas", [True, False], ids=["openblas", "ggml"])
def test_packed_units_match_the_original_resampler(temporal_mmproj: Path, ref, blas: bool) -> None:
    enc = VisionEncoder(temporal_mmproj, n_threads=2, blas=blas)
    assert enc.temporal
    got = enc.encode_units(PIECES, UNITS)
    want = _reference(ref, PIECES, UNITS)
    assert got.shape == want.shape == (len(UNITS), enc.query_num, enc.hidden)
    for u, unit in enumerate(UNITS):
        assert _rel(got[u], want[u]) <= 1e-4, (unit, _rel(got[u], want[u]))
    # the time ids matter where a unit has several frames (one frame's code shifts all its keys' scores alike,
    # which softmax ignores), and the vLLM arrangement (2-D code on the values) is far off everywhere
    no_time = _reference(ref, PIECES, [(i, [-1] * len(i)) for i, _ in UNITS])
    vllm = _reference(ref, PIECES, UNITS, "vllm")
    for u, (index, _) in enumerate(UNITS):
        if len(index) > 1:
            assert _rel(got[u], no_time[u]) > 1e-2, index
        assert _rel(got[u], vllm[u]) > 1e-2, index


@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
def test_tiny_4_5_packed_units(converted, tiny_hf, outtype: str) -> None:
    """tiny-4.5 as converted (the converter writes the temporal key) against the original resampler on its own
    weights."""
    enc = VisionEncoder(converted("4.5", outtype).mmproj, n_threads=2)
    assert enc.temporal
    hf = tiny_hf["4.5"]
    ref = reference_vision(hf), Reference3DResampler(load_state(hf), load_config(hf)["hidden_size"])
    got = enc.encode_units(PIECES, UNITS)
    want = _reference(ref, PIECES, UNITS)
    tol = 1e-4 if outtype == "f32" else Q8_MAX_REL
    for u, unit in enumerate(UNITS):
        assert _rel(got[u], want[u]) <= tol, (unit, _rel(got[u], want[u]))
        if outtype == "q8_0":
            assert _cos_rows(got[u], want[u]).min() >= 0.999, unit


def test_single_pieces_without_time_are_the_image_path(temporal_mmproj: Path) -> None:
    """A unit of one frame-piece with id -1 is 2.6's (and 4.5's image) computation: the same rows as encode()."""
    enc = VisionEncoder(temporal_mmproj, n_threads=2)
    images = [PIECES[0], PIECES[3], PIECES[9]]
    got = enc.encode_units(images, [([i], [-1]) for i in range(3)])
    want = enc.encode(images)
    assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()


def test_images_unchanged_by_the_key(converted, temporal_mmproj: Path) -> None:
    """The temporal key changes nothing for images: encode() gives the same bits with it on and off."""
    off = VisionEncoder(converted("2.6", "f32").mmproj, n_threads=2)
    on = VisionEncoder(temporal_mmproj, n_threads=2)
    assert not off.temporal and on.temporal
    assert np.array_equal(on.encode(PIECES[:4]), off.encode(PIECES[:4]))
    with pytest.raises(ValueError, match="temporal resampler"):
        off.encode_units(PIECES[:2], [([0, 1], [0, 1])])


def test_q8_0_packed_units(converted, tmp_path: Path, ref) -> None:
    """The int8 path runs packed units: close to the f32 reference (q8_0 weights), and a unit of one piece without
    time equals the same file's image encoding."""
    q8 = _rewrite(converted("2.6", "q8_0").mmproj, tmp_path / "q8.gguf", drop_keys=(KEY,),
                  set_keys={KEY: (True, BOOL)})
    enc = VisionEncoder(q8, n_threads=2, int8="on")
    assert enc.native.uses_int8
    got = enc.encode_units(PIECES, UNITS)
    want = _reference(ref, PIECES, UNITS)
    for u in range(len(UNITS)):
        assert _rel(got[u], want[u]) <= Q8_MAX_REL, (UNITS[u], _rel(got[u], want[u]))
        assert _cos_rows(got[u], want[u]).min() >= 0.999, UNITS[u]
    single = enc.encode_units([PIECES[9]], [([0], [-1])])
    assert np.abs(single - enc.encode([PIECES[9]])).max() <= 1e-6 * np.abs(single).max()


def test_llamacpp_version_6_files_default_to_temporal(converted, tmp_path: Path) -> None:
    """A llama.cpp 4.5 mmproj (clip.minicpmv_version 6, none of our keys) gets the temporal path from its projector
    row; an explicit false in the file turns it off."""
    src = converted("2.6", "f32").mmproj
    six = _rewrite(src, tmp_path / "six.gguf", drop_keys=(KEY, "clip.minicpmv_version"),
                   set_keys={"clip.minicpmv_version": (6, U32)})
    assert VisionEncoder(six, n_threads=1).temporal
    off = _rewrite(six, tmp_path / "off.gguf", drop_keys=(KEY,), set_keys={KEY: (False, BOOL)})
    assert not VisionEncoder(off, n_threads=1).temporal


def test_bad_units_are_refused(temporal_mmproj: Path) -> None:
    enc = VisionEncoder(temporal_mmproj, n_threads=1)
    with pytest.raises(ValueError, match="share one patch grid"):
        enc.encode_units([PIECES[0], PIECES[3]], [([0, 1], [0, 1])])
    with pytest.raises(ValueError, match="one time id per piece"):
        enc.encode_units([PIECES[0]], [([0], [0, 1])])
    with pytest.raises(ValueError, match="out of range"):
        enc.encode_units([PIECES[0]], [([1], [0])])
    with pytest.raises(ValueError, match="time id"):
        enc.encode_units([PIECES[0]], [([0], [-2])])


# --- the video recipe (fact sheet §9) ---------------------------------------------------------------------------


def _card_time_ids(n_frames: int, fps: float, choose_fps: float, force_packing: int | None = None
                   ) -> tuple[list[int], list[int], int]:
    """The model card's encode_video in numpy, transcribed from the sheet: (frame indices, time ids, packing)."""
    duration = n_frames / fps
    if choose_fps * int(duration) <= 180:
        packing, frames = 1, round(min(choose_fps, round(fps)) * min(180, duration))
    else:
        packing = int(np.ceil(duration * choose_fps / 180))
        frames = round(duration * choose_fps) if packing <= 3 else 180 * 3
        packing = min(packing, 3)
    if force_packing:
        packing = min(force_packing, 3)
    gap = n_frames / frames
    idx = np.array([int(i * gap + gap / 2) for i in range(frames)])
    grid = np.arange(0, duration, 0.1)
    ts = idx / fps
    nearest = grid[np.abs(grid[None, :] - ts[:, None]).argmin(axis=1)]
    ids = (nearest / 0.1).astype(np.int32)
    return idx.tolist(), ids.tolist(), packing


def test_time_id_truncation_trap() -> None:
    """Grid values 4.3 s, 8.1 s, 8.6 s, 9.1 s give ids 42, 80, 85, 90 (float64 division, then truncation)."""
    r = PackedSeconds()
    assert r.time_ids([4.3, 8.1, 8.6, 9.1], duration=10.0) == [42, 80, 85, 90]
    grid = np.arange(0, 10.0, 0.1)
    assert r.time_ids([float(grid[43]), float(grid[81])], duration=10.0) == [42, 80]


@pytest.mark.parametrize(("n_frames", "fps", "choose_fps", "force"), [
    (300, 30.0, 3, None),    # 10 s: packing 1
    (1800, 30.0, 5, None),   # 60 s at 5 fps: 300 frames -> packing 2
    (5400, 30.0, 3, None),   # 180 s at 3 fps: 540 frames -> packing 3
    (9000, 25.0, 5, None),   # 360 s at 5 fps: packing 10 -> capped: 540 frames, packing 3
    (1234, 29.97, 3, None),  # a fractional rate
    (600, 24.0, 3, 2),       # force_packing
])
def test_recipe_matches_the_model_card(n_frames: int, fps: float, choose_fps: int, force: int | None) -> None:
    r = PackedSeconds(choose_fps=choose_fps, force_packing=force)
    plan = r.plan(n_frames, fps)
    idx, ids, packing = _card_time_ids(n_frames, fps, choose_fps, force)
    assert plan.frames == idx
    assert plan.packing == packing
    assert [t for g in plan.groups for t in g] == ids
    assert all(len(g) == packing for g in plan.groups[:-1]) and 0 < len(plan.groups[-1]) <= packing
    assert r.frame_indices(n_frames, fps) == idx
    assert r.max_slices(len(idx)) == 1 and not r.use_image_id


def test_recipe_trap_ids_appear() -> None:
    """Somewhere in a long clip the recipe gives the truncated id (one less than the grid index)."""
    r = PackedSeconds()
    plan = r.plan(30 * 60, 30.0)
    ts = np.array(plan.frames) / 30.0
    grid_index = np.abs(np.arange(0, 60.0, 0.1)[None, :] - ts[:, None]).argmin(axis=1)
    flat = [t for g in plan.groups for t in g]
    assert any(t == g - 1 for t, g in zip(flat, grid_index, strict=True))
    assert all(t in (g, g - 1) for t, g in zip(flat, grid_index, strict=True))


def test_reference_table_is_float32_numpy() -> None:
    """The reference's temporal code is float32 end to end (the original's numpy table)."""
    from reference.resampler_3d import temporal_table

    t = temporal_table(256, 100)
    assert t.dtype == np.float32 and t.shape == (100, 256)
    assert torch.allclose(torch.from_numpy(t[0]), torch.cat([torch.zeros(128), torch.ones(128)]))
