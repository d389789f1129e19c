"""MiniCPM-V 1.0's part of the converter: 2.0's timm tower and MiniCPM keys, plus the resampler's key positions.
1.0 adds to its keys the stored 8 x 8 query table resized to the tower's token grid with torch's plain bicubic
(`F.interpolate(mode="bicubic", align_corners=False)`, no antialias); the grid is fixed by `image_size`, so the
table is computed here once, in float32 from the stored values, as the original does on every call.

1.0 and 2.0 store the same tensors; only config.json tells them apart: 1.0 has no slicing keys."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..v2_0.convert import TimmConverter, timm_minicpmv

A = -0.75  # torch's bicubic convolution constant
SLICING_KEYS = ("slice_mode", "max_slice_nums")


def _cubic(d: float) -> float:
    """The cubic-convolution kernel at distance d (0 <= d < 2)."""
    if d <= 1.0:
        return ((A + 2.0) * d - (A + 3.0)) * d * d + 1.0
    return ((A * d - 5.0 * A) * d + 8.0 * A) * d - 4.0 * A


def bicubic_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in]: each output sample as a sum of input samples. Source coordinate (i + 0.5) * n_in / n_out - 0.5,
    unclamped; four taps around it, their indices clamped to the edge (so the edge sample takes the outer taps'
    weights and the border extrapolates)."""
    w = np.zeros((n_out, n_in), dtype=np.float64)
    scale = n_in / n_out
    for i in range(n_out):
        s = (i + 0.5) * scale - 0.5
        x0 = math.floor(s)
        t = s - x0
        for k, d in zip(range(-1, 3), (t + 1.0, t, 1.0 - t, 2.0 - t), strict=True):
            w[i, min(max(x0 + k, 0), n_in - 1)] += _cubic(d)
    return w


def resize_table(table: np.ndarray, n_out: int) -> np.ndarray:
    """A square [side * side, C] table (row-major grid) resized to [n_out * n_out, C], float32."""
    side = math.isqrt(table.shape[0])
    if side * side != table.shape[0]:
        raise ValueError(f"a table of {table.shape[0]} rows is not a square grid")
    if side == n_out:
        return table.astype(np.float32)
    w = bicubic_weights(side, n_out)
    grid = table.astype(np.float32).astype(np.float64).reshape(side, side, -1)
    out = np.einsum("is,jt,stc->ijc", w, w, grid, optimize=True)
    return out.reshape(n_out * n_out, -1).astype(np.float32)


class Converter(TimmConverter):
    def resampler_table(self, cfg: dict) -> list[tuple[str, str, Any, tuple, tuple]]:
        """`resampler.pos_embed_k`: the stored query table resized to the image's token grid (image_size / 14)."""
        vc = cfg["vision_config"]
        grid = int(cfg["image_size"]) // int(vc["patch_size"])
        E, Q = int(cfg["hidden_size"]), int(cfg["query_num"])
        return [("resampler.pos_embed", "resampler.pos_embed_k", lambda a: resize_table(a, grid), (grid * grid, E),
                 (Q, E))]


def detects(cfg: dict) -> bool:
    """A timm SigLIP `vision_encoder`, no `version` key, and no slicing keys (`slice_mode`, `max_slice_nums`): 2.0's
    config has them, 1.0's does not (their tensors are the same)."""
    return timm_minicpmv(cfg) and not any(k in cfg for k in SLICING_KEYS)
