"""MiniCPM-V 4.6's image processor as transformers 5.23 runs it: the class AutoImageProcessor picks for the real
checkpoint's preprocessor_config.json (the torchvision backend, `MiniCPMV4_6ImageProcessor`), fed PIL images and
arrays as a user would. Runs in a child process under that release (reference/isolated.py); the test process only
imports `make_image` (no transformers import at module level), so both sides build the same pixels from a spec.

Pixel values travel back as one SHA-256 per piece (float32 bytes, pieces unpatched to [3, H, W]): 800 sliced noise
images are gigabytes of floats. `run(..., full=True)` returns the pieces themselves, to look at a mismatch."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

# the real checkpoint's preprocessor_config.json (MiniCPM-V 4.6 fact sheet §1), no downsample_mode: "16x"
PREPROCESSOR_CONFIG = {
    "image_processor_type": "MiniCPMV4_6ImageProcessor",
    "processor_class": "MiniCPMV4_6Processor",
    "max_slice_nums": 9,
    "scale_resolution": 448,
    "patch_size": 14,
    "use_image_id": True,
    "slice_mode": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}
PATCH = 14

# how a case's image is given: a PIL RGB image; PIL RGBA / LA images; a palette image with a transparent index;
# an RGB image with a transparency key; an [H, W, 4] uint8 array (transformers' torchvision path for arrays)
FORMS = ("rgb", "rgba", "la", "p-transparency", "rgb-transparency", "rgba-array")


def make_image(w: int, h: int, seed: int, form: str = "rgb") -> Image.Image | np.ndarray:
    """Uniform noise (every value 0..255, so resizing overshoots and clamps), alpha too where there is one."""
    rng = np.random.default_rng(seed)
    if form == "rgb":
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    if form in ("rgba", "rgba-array"):
        a = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
        a[: h // 3, :, 3] = 255  # an opaque band and a transparent one beside the noisy alpha
        a[h // 3: h // 2, :, 3] = 0
        return a if form == "rgba-array" else Image.fromarray(a, "RGBA")
    if form == "la":
        return Image.fromarray(rng.integers(0, 256, (h, w, 2), dtype=np.uint8), "LA")
    if form == "p-transparency":
        img = Image.fromarray(rng.integers(0, 16, (h, w), dtype=np.uint8), "P")
        img.putpalette(rng.integers(0, 256, 16 * 3, dtype=np.uint8).tolist())
        img.info["transparency"] = 3
        return img
    if form == "rgb-transparency":
        a = rng.integers(0, 4, (h, w, 3), dtype=np.uint8) * 85  # few colours, so the key colour occurs
        img = Image.fromarray(a, "RGB")
        img.info["transparency"] = (85, 170, 0)
        return img
    raise ValueError(f"unknown form {form!r}")


def _unpatch(pv: np.ndarray, h: int, w: int) -> np.ndarray:
    """One piece's columns of pixel_values [3, 14, L * 14] (reshape_by_patch: patch l, row-major over the h x w
    patch grid, in columns 14 l .. 14 l + 13) back to [3, 14 h, 14 w]."""
    c = pv.shape[0]
    x = pv.reshape(c, PATCH, h * w, PATCH).transpose(0, 2, 1, 3)  # [c, patch, row in patch, column in patch]
    return x.reshape(c, h, w, PATCH, PATCH).transpose(0, 1, 3, 2, 4).reshape(c, h * PATCH, w * PATCH)


def run(jobs: list[tuple[int, int, int, str, str, int]], full: bool = False) -> dict:
    """For every (w, h, seed, form, downsample_mode, max_slice_nums) job: the grid [rows, cols] (None: not sliced),
    target_sizes (h, w in patches, per piece) and per piece the SHA-256 of its float32 pixels (full: the pieces).
    Also the image processor's class name."""
    from transformers import AutoImageProcessor

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG))
        proc = AutoImageProcessor.from_pretrained(d)
    out: dict = {"class": type(proc).__name__, "results": []}
    spec, image = None, None
    for w, h, seed, form, mode, max_slice_nums in jobs:
        if spec != (w, h, seed, form):  # consecutive jobs of one image share it
            spec, image = (w, h, seed, form), make_image(w, h, seed, form)
        r = proc([image], return_tensors="np", downsample_mode=mode, max_slice_nums=max_slice_nums)
        pv, sizes = r["pixel_values"][0], r["target_sizes"].tolist()
        assert pv.dtype == np.float32
        pieces, col = [], 0
        for ph, pw in sizes:
            pieces.append(np.ascontiguousarray(_unpatch(pv[:, :, col: col + ph * pw * PATCH], ph, pw)))
            col += ph * pw * PATCH
        assert col == pv.shape[-1]
        grid = r["grids"][0]
        out["results"].append({
            "grid": None if list(grid) == [0, 0] else tuple(grid),
            "target_sizes": [tuple(s) for s in sizes],
            "num_patches": r["num_patches_per_image"][0],
            "pieces": pieces if full else [hashlib.sha256(p.tobytes()).hexdigest() for p in pieces],
        })
    return out
