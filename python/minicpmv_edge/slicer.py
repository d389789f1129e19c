"""MiniCPM-V's image slicing: an overview plus a grid of slices, resized and normalised as the original
processor does (shared/spec/hf-reference.md §7). The work is in C++ (cpp/slicing.cpp, cpp/resize.cpp)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ._native import _core
from .image import DEFAULT_MAX_PIXELS, ImageInput, load_rgb


@dataclass(frozen=True)
class SliceConfig:
    max_slice_nums: int = 9  # 1 or 2 for video frames
    scale_resolution: int = 448
    patch_size: int = 14
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    n_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.max_slice_nums < 1:
            raise ValueError(f"max_slice_nums must be at least 1, got {self.max_slice_nums}")
        if self.patch_size < 1 or self.scale_resolution < self.patch_size:
            raise ValueError(f"invalid scale_resolution {self.scale_resolution} / patch_size {self.patch_size}")
        if self.n_threads < 1:
            raise ValueError(f"n_threads must be at least 1, got {self.n_threads}")


@dataclass(frozen=True)
class SlicedImage:
    grid: tuple[int, int] | None  # (cols, rows); None when the image is not sliced
    pieces_u8: list[np.ndarray]  # [H, W, 3] uint8 each: overview, then slices row by row
    config: SliceConfig

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """(width, height) of every piece."""
        return [(p.shape[1], p.shape[0]) for p in self.pieces_u8]

    @property
    def patch_grids(self) -> list[tuple[int, int]]:
        """(h, w) in patches of every piece: the original `tgt_sizes`."""
        ps = self.config.patch_size
        return [(p.shape[0] // ps, p.shape[1] // ps) for p in self.pieces_u8]

    def pieces(self) -> list[np.ndarray]:
        """float32 [3, H, W] normalised pixels of every piece."""
        c = self.config
        return [_core.normalize_chw(p, list(c.mean), list(c.std)) for p in self.pieces_u8]

    def n_tokens(self, query_num: int) -> int:
        """Image embedding tokens the language model receives (query_num per piece)."""
        return query_num * len(self.pieces_u8)


def plan(width: int, height: int, config: SliceConfig | None = None) -> tuple[tuple[int, int] | None, list]:
    """(grid, [(width, height) of each piece]) without touching pixels."""
    c = config or SliceConfig()
    p = _core.plan_slices(width, height, c.max_slice_nums, c.scale_resolution, c.patch_size)
    return p.grid, p.pieces


def slice_image(image: ImageInput, config: SliceConfig | None = None) -> SlicedImage:
    c = config or SliceConfig()
    rgb = load_rgb(image, c.max_pixels)
    p, pieces = _core.slice_pieces(rgb, c.max_slice_nums, c.scale_resolution, c.patch_size, c.n_threads)
    return SlicedImage(p.grid, pieces, c)
