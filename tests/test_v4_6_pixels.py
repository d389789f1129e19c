"""MiniCPM-V 4.6's image preprocessing (SliceConfig(preprocess="torchvision", size_unit=56 or 28)) against
transformers 5.23's default image processor (`MiniCPMV4_6ImageProcessor`, the torchvision backend), run in a
process of its own (reference/v4_6_processor.py): for 400 image sizes in both downsample modes, the plan (grid,
piece sizes, tokens per piece) equal and every piece's float32 pixel values bit-exact; random-noise content, so the
resize overshoots and clamps; a few images with alpha or a transparency key (composited onto white).

torch's uint8 resize takes a different code path per CPU (AVX2, NEON, plain C++): on aarch64 it is not known to
agree with the x86 one (fact sheet §2.3), hence the arm64 marks."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from PIL import Image

from minicpmv_edge._native import _core
from minicpmv_edge.image import load_rgb
from minicpmv_edge.slicer import SliceConfig, plan, slice_image
from reference import isolated
from reference.v4_6_processor import make_image

S, P = 448, 14
UNIT = {"16x": 4 * P, "4x": 2 * P}  # piece sides: multiples of the patch times the token merge per side
MERGE = {"16x": 16, "4x": 4}  # patches per token

# the fact sheet's worked examples (16x): (W, H) -> grid [rows, cols], pieces as (W, H), tokens per piece
WORKED = [
    ((448, 448), None, [(448, 448)], [64]),
    ((300, 200), None, [(560, 392)], [70]),
    ((100, 1000), None, [(168, 1400)], [75]),
    ((449, 449), (2, 1), [(448, 448)] + [(616, 336)] * 2, [64, 66, 66]),
    ((640, 480), (1, 2), [(504, 392)] + [(392, 560)] * 2, [63, 70, 70]),
    ((777, 333), (1, 2), [(672, 280)] + [(504, 392)] * 2, [60, 63, 63]),
    ((1344, 1344), (3, 3), [(448, 448)] * 10, [64] * 10),
    ((1920, 1080), (2, 4), [(616, 336)] + [(448, 448)] * 8, [66] + [64] * 8),
    ((4000, 500), (1, 8), [(1288, 168)] + [(448, 448)] * 8, [69] + [64] * 8),
]
WORKED_4X = [((300, 200), [(560, 364)], 260), ((640, 480), [(504, 392)] + [(364, 560)] * 2, 772),
             ((1920, 1080), [(588, 336)] + [(420, 476)] * 8, 2292)]


def _overview_hits_a_tie(w: int, h: int) -> bool:
    """Whether the overview's size (find_best_resize) lands exactly half way between two units in either mode:
    the half-to-even rounding decides it."""
    r = w / h
    oh = int(S / math.sqrt(r))
    ow = int(oh * r)
    return any(v % u == u // 2 for u in UNIT.values() for v in (oh, ow))


def _sizes(n: int = 400, seed: int = 4646) -> list[tuple[int, int]]:
    """n distinct (W, H), deterministic: the worked examples, edge sizes, small, square, extreme aspect ratios,
    areas around 448^2 (the slicing threshold), overview sizes on a rounding tie, then log-uniform ones."""
    rng = np.random.default_rng(seed)
    out: list[tuple[int, int]] = []

    def add(w: int, h: int) -> None:
        if 1 <= w <= 4000 and 1 <= h <= 4000 and (w, h) not in out and len(out) < n:
            out.append((w, h))

    for (w, h), *_ in WORKED:
        add(w, h)
    for w, h in [(1, 1), (1, 7), (7, 1), (2, 3), (13, 13), (14, 14), (27, 29), (28, 28), (55, 57), (56, 56),
                 (112, 56), (448, 449), (449, 448), (447, 449), (448, 896), (896, 448), (500, 4000), (1000, 100),
                 (3000, 30), (30, 3000), (4000, 16), (16, 4000), (2, 2000), (2000, 2), (1024, 768), (800, 3000),
                 (1500, 1500), (2688, 2688), (3000, 2000), (1, 4000)]:
        add(w, h)
    for _ in range(50):  # small
        add(*(int(v) for v in rng.integers(1, 121, 2)))
    for _ in range(40):  # square
        s = int(np.exp(rng.uniform(np.log(8), np.log(2400))))
        add(s, s)
    for _ in range(40):  # extreme aspect ratios, either way round
        long = int(rng.integers(400, 4001))
        short = max(1, int(long / rng.uniform(8, 60)))
        add(*((long, short) if rng.random() < 0.5 else (short, long)))
    for _ in range(60):  # areas within a few pixels of 448^2
        w = int(rng.integers(150, 1300))
        add(w, round(S * S / w) + int(rng.integers(-2, 3)))
    ties = 0
    while ties < 25:  # overview sizes exactly half way between two units
        w, h = (int(v) for v in np.exp(rng.uniform(np.log(20), np.log(3000), 2)))
        if _overview_hits_a_tie(w, h) and (w, h) not in out:
            add(w, h)
            ties += 1
    while len(out) < n:  # log-uniform sides, at most about 6 megapixels
        w, h = (int(v) for v in np.exp(rng.uniform(np.log(16), np.log(4000), 2)))
        if w * h <= 6_000_000:
            add(w, h)
    return out


SIZES = _sizes()
# images with alpha or a transparency key (PIL and, for arrays, transformers' own arithmetic), 16x and 4x
ALPHA_CASES = [(640, 480, "rgba"), (333, 777, "rgba"), (1920, 1080, "rgba"), (120, 90, "rgba"),
               (500, 375, "rgba-array"), (449, 449, "rgba-array"), (2000, 300, "rgba-array"),
               (300, 200, "la"), (800, 600, "la"), (640, 480, "p-transparency"), (100, 1000, "p-transparency"),
               (450, 460, "rgb-transparency")]
# the model card recommends max_slice_nums 36 for images: grids of up to 36 pieces, on the 30 largest sizes
BIG = sorted(SIZES, key=lambda s: (-s[0] * s[1], s))[:30]

# jobs: (w, h, seed, form, downsample_mode, max_slice_nums)
JOBS = ([(w, h, i, "rgb", m, 9) for i, (w, h) in enumerate(SIZES) for m in ("16x", "4x")]
        + [(w, h, 1000 + i, f, m, 9) for i, (w, h, f) in enumerate(ALPHA_CASES) for m in ("16x", "4x")]
        + [(w, h, 2000 + i, "rgb", "16x", 36) for i, (w, h) in enumerate(BIG)])


def _config(mode: str, max_slice_nums: int = 9) -> SliceConfig:
    # max_patches: the processor has no limit; ours (4 full pieces) refuses 1x4000's 56x28336 overview
    return SliceConfig(max_slice_nums=max_slice_nums, scale_resolution=S, patch_size=P, size_unit=UNIT[mode],
                       preprocess="torchvision", n_threads=2, max_patches=1 << 20)


def test_the_job_list() -> None:
    assert len(SIZES) == 400 and len(set(SIZES)) == 400
    assert sum(_overview_hits_a_tie(w, h) for w, h in SIZES) >= 25
    assert len(BIG) == 30 and sum(w * h > 9 * S * S for w, h in BIG) >= 15  # more than 9 slices: 36 matters


@pytest.mark.parametrize(("size", "grid", "pieces", "tokens"), WORKED)
def test_worked_examples(size, grid, pieces, tokens) -> None:
    """The fact sheet's table (16x): our grid is (cols, rows), the sheet's [rows, cols]."""
    g, got = plan(*size, _config("16x"))
    assert (g[::-1] if g else None) == grid
    assert got == pieces
    assert [w * h // (P * P * 16) for w, h in got] == tokens


@pytest.mark.parametrize(("size", "pieces", "tokens"), WORKED_4X)
def test_worked_examples_4x(size, pieces, tokens) -> None:
    _, got = plan(*size, _config("4x"))
    assert got == pieces
    assert sum(w * h // (P * P * 4) for w, h in got) == tokens


@pytest.fixture(scope="module")
def reference(request) -> dict:
    """The jobs of the (mode, max_slice_nums) runs the selected tests use through transformers 5.23's processor, in
    one child process (under emulation, scripts/arm64-test.sh, only 16x with 9 slices): {job: result}."""
    runs = {(item.callspec.params["mode"], item.callspec.params.get("max_slice_nums", 9))
            for item in request.session.items
            if item.module is request.module and hasattr(item, "callspec") and "mode" in item.callspec.params}
    jobs = [j for j in JOBS if j[4:] in runs]
    out = isolated.call("reference.v4_6_processor:run", jobs, env=isolated.TRANSFORMERS_5_23, version="5.23.0",
                        timeout=1800)
    assert out["class"] == "MiniCPMV4_6ImageProcessor"  # what AutoImageProcessor picks for the real config
    return dict(zip(jobs, out["results"], strict=True))


def _ours(job: tuple) -> tuple:
    w, h, seed, form, mode, max_slice_nums = job
    s = slice_image(make_image(w, h, seed, form), _config(mode, max_slice_nums))
    return s, [hashlib.sha256(np.ascontiguousarray(p).tobytes()).hexdigest() for p in s.pieces()]


@pytest.mark.arm64(mode="16x")
@pytest.mark.parametrize("mode", ["16x", "4x"])
def test_plans_equal_the_processor(reference, mode: str) -> None:
    """Grid, piece sizes and tokens per piece, for the 400 sizes (sizes only, no pixels)."""
    for job, want in reference.items():
        w, h, _, _, m, max_slice_nums = job
        if m != mode:
            continue
        grid, pieces = plan(w, h, _config(mode, max_slice_nums))
        assert (grid[::-1] if grid else None) == want["grid"], job
        assert [(ph // P, pw // P) for pw, ph in pieces] == want["target_sizes"], job
        assert len(pieces) == want["num_patches"], job
        # tokens per piece: patches / 16 (16x) or / 4 (4x), whole, = (H / unit) * (W / unit)
        assert all(ph * pw % MERGE[mode] == 0 for ph, pw in want["target_sizes"]), job
        assert [(pw // UNIT[mode]) * (ph // UNIT[mode]) for pw, ph in pieces] == [
            ph * pw // MERGE[mode] for ph, pw in want["target_sizes"]], job


@pytest.mark.arm64(mode="16x", max_slice_nums=9)
@pytest.mark.parametrize(("mode", "max_slice_nums"), [("16x", 9), ("4x", 9), ("16x", 36)])
def test_pixels_are_bit_exact(reference, mode: str, max_slice_nums: int) -> None:
    """Every piece's float32 pixel values (resize, normalisation, alpha) equal the processor's bit for bit."""
    bad = []
    n = 0
    for job, want in reference.items():
        if job[4:] != (mode, max_slice_nums):
            continue
        s, got = _ours(job)
        n += 1
        assert s.patch_grids == want["target_sizes"], job
        if got != want["pieces"]:
            bad.append(job)
    assert n >= 30
    if bad:  # the first mismatch in detail: its pieces from the processor
        full = isolated.call("reference.v4_6_processor:run", [bad[0]], full=True, env=isolated.TRANSFORMERS_5_23,
                             version="5.23.0")["results"][0]["pieces"]
        s, _ = _ours(bad[0])
        diffs = [(float(np.abs(g - e).max()), float((g != e).mean())) for g, e in zip(s.pieces(), full, strict=True)]
        pytest.fail(f"{len(bad)} of {n} images differ; the first, {bad[0]}: (max |diff|, fraction) per piece "
                    f"{diffs}; all: {bad[:20]}")


@pytest.mark.arm64
def test_resize_equals_torch_for_any_scale() -> None:
    """The resampler alone against torchvision's resize of a uint8 tensor (BICUBIC, antialias): up and down,
    one axis only, extreme factors, 1-pixel sides."""
    torch = pytest.importorskip("torch")
    from torchvision.transforms.v2 import functional as tvf

    rng = np.random.default_rng(11)
    pairs = [((4000, 500), (56, 56)), ((4000, 30), (3, 30)), ((1, 5000), (1, 3)), ((5000, 2), (7, 1)),
             ((3, 3), (1000, 1000)), ((2, 2), (1, 1)), ((1, 1), (5, 5)), ((448, 300), (448, 301))]
    for _ in range(150):
        w, h = (int(v) for v in rng.integers(1, 400, 2))
        ow, oh = (int(v) for v in rng.integers(1, 700, 2))
        pairs.append(((w, h), [(ow, oh), (w, oh), (ow, h)][int(rng.integers(0, 3))]))
    for (w, h), (ow, oh) in pairs:
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        want = tvf.resize(torch.from_numpy(a).permute(2, 0, 1), [oh, ow], interpolation=tvf.InterpolationMode.BICUBIC,
                          antialias=True).permute(1, 2, 0).numpy()
        got = _core.resize_bicubic(a, ow, oh, 2, kind="torch")
        assert np.array_equal(got, want), ((w, h), (ow, oh), np.abs(got.astype(int) - want).max())


@pytest.mark.arm64
def test_array_alpha_equals_the_torchvision_backend_for_every_pair() -> None:
    """load_rgb(alpha="white") of an RGBA array against the arithmetic of transformers' torchvision backend
    (torch float32, torchvision's to_dtype), for all 256 x 256 (value, alpha) pairs."""
    torch = pytest.importorskip("torch")
    from torchvision.transforms.v2 import functional as tvf

    v, a = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8), indexing="ij")
    rgba = np.stack([v, v[::-1], v, a], -1)
    x = tvf.to_dtype(torch.from_numpy(rgba), torch.float32, scale=True)
    want = tvf.to_dtype(x[..., :3] * x[..., 3:] + (1 - x[..., 3:]), torch.uint8, scale=True).numpy()
    assert np.array_equal(load_rgb(rgba, alpha="white"), want)
    # Pillow's alpha_composite (the PIL images' path) rounds differently
    pil = np.asarray(Image.alpha_composite(Image.new("RGBA", (256, 256), (255,) * 4), Image.fromarray(rgba, "RGBA"))
                     .convert("RGB"))
    assert 0 < np.count_nonzero(pil != want) and np.abs(pil.astype(int) - want).max() == 1


@pytest.mark.parametrize(("mode", "tokens", "per_piece"), [(None, 203, [63, 70, 70]), ("4x", 772, None)])
def test_slice_command_counts_each_pieces_tokens(tmp_path, mode: str | None, tokens: int, per_piece) -> None:
    """`minicpmv-edge slice --model-version 4.6`: the sheet's 640x480 row (16x: 63 + 70 + 70; 4x: 772)."""
    import json
    import subprocess

    from helpers import cli

    path = tmp_path / "a.png"
    make_image(640, 480, 3, "rgb").save(path)
    args = [cli(), "slice", str(path), "--model-version", "4.6", "--json",
            *(["--downsample-mode", mode] if mode else [])]
    out = json.loads(subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout)
    assert out["tokens"] == tokens
    if per_piece:
        assert [p["tokens"] for p in out["pieces"]] == per_piece
