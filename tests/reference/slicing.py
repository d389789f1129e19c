"""MiniCPM-V's slicing rule in plain Python, written from the original `image_processing_minicpmv.py` (its
`get_sliced_grid`, `find_best_resize`, `get_refine_size`, `slice_image`), with Pillow for the pixels."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def ensure_divide(length: float, patch: int) -> int:
    return max(round(length / patch) * patch, patch)  # Python round: half to even


def find_best_resize(size: tuple[float, float], scale: int, patch: int, allow_upscale: bool) -> tuple[int, int]:
    w, h = size
    if w * h > scale * scale or allow_upscale:
        r = w / h
        h = int(scale / math.sqrt(r))
        w = int(h * r)
    return ensure_divide(w, patch), ensure_divide(h, patch)


def get_sliced_grid(size: tuple[int, int], max_slice_nums: int, scale: int) -> list[int] | None:
    w, h = size
    log_ratio = math.log(w / h)
    multiple = min(math.ceil(w * h / (scale * scale)), max_slice_nums)
    if multiple <= 1:
        return None
    candidates = []
    for n in (multiple - 1, multiple, multiple + 1):
        if n == 1 or n > max_slice_nums:
            continue
        candidates += [[m, n // m] for m in range(1, n + 1) if n % m == 0]
    best, best_err = [1, 1], float("inf")
    for g in candidates:
        err = abs(log_ratio - math.log(g[0] / g[1]))
        if err < best_err:
            best, best_err = g, err
    return best


def get_refine_size(size: tuple[int, int], grid: list[int], scale: int, patch: int) -> tuple[int, int]:
    w, h = size
    gx, gy = grid
    rw, rh = ensure_divide(w, gx), ensure_divide(h, gy)
    cw, ch = find_best_resize((rw / gx, rh / gy), scale, patch, allow_upscale=True)
    return cw * gx, ch * gy


def plan(size: tuple[int, int], max_slice_nums: int = 9, scale: int = 448, patch: int = 14):
    """(grid or None, [(w, h) of each piece in order])."""
    grid = get_sliced_grid(size, max_slice_nums, scale)
    if grid is None:
        return None, [find_best_resize(size, scale, patch, allow_upscale=True)]
    overview = find_best_resize(size, scale, patch, allow_upscale=False)
    rw, rh = get_refine_size(size, grid, scale, patch)
    cell = (rw // grid[0], rh // grid[1])
    return grid, [overview] + [cell] * (grid[0] * grid[1])


def pieces(image: Image.Image, max_slice_nums: int = 9, scale: int = 448, patch: int = 14) -> list[np.ndarray]:
    """The resized uint8 pieces, [H, W, 3] each, overview first then slices row by row."""
    image = image.convert("RGB")
    grid, sizes = plan(image.size, max_slice_nums, scale, patch)
    if grid is None:
        return [np.asarray(image.resize(sizes[0], resample=Image.Resampling.BICUBIC))]
    out = [np.asarray(image.resize(sizes[0], resample=Image.Resampling.BICUBIC))]
    refine = image.resize(get_refine_size(image.size, grid, scale, patch), resample=Image.Resampling.BICUBIC)
    cw, ch = sizes[1]
    for r in range(grid[1]):
        for c in range(grid[0]):
            out.append(np.asarray(refine.crop((c * cw, r * ch, (c + 1) * cw, (r + 1) * ch))))
    return out


def normalize(piece: np.ndarray, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> np.ndarray:
    """As the original processor: rescale by 1/255 in float64, cast to float32, then (x - mean) / std; CHW."""
    x = (piece.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)
    return x.transpose(2, 0, 1)
