"""MiniCPM-V's image slicing: an overview plus a grid of slices, resized and normalised as the original
processor does (the original `image_processing_minicpmv.py`). The work is in C++ (cpp/preprocess/)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._native import _core
from .chat_options import check_int
from .cpus import available_cpus
from .image import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, Image, ImageError, ImageInput, load_rgb


@dataclass(frozen=True)
class SliceConfig:
    max_slice_nums: int = 9  # 1 or 2 for video frames
    scale_resolution: int = 448
    patch_size: int = 14
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    n_threads: int = field(default_factory=available_cpus)
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    max_side: int | None = DEFAULT_MAX_SIDE  # longest side, in pixels
    max_patches: int | None = None  # largest piece, in patches; None: 4 x a full (scale_resolution)^2 piece
    square: bool = False  # MiniCPM-V 1.0: the whole image squashed to one scale_resolution square, never sliced

    def __post_init__(self) -> None:
        check_int("max_slice_nums", self.max_slice_nums, 1)
        check_int("patch_size", self.patch_size, 1)
        check_int("scale_resolution", self.scale_resolution, self.patch_size)
        check_int("n_threads", self.n_threads, 1)
        if self.max_pixels is not None:
            check_int("max_pixels", self.max_pixels, 1)
        if self.max_side is not None:
            check_int("max_side", self.max_side, 1)
        if self.max_patches is not None:
            check_int("max_patches", self.max_patches, 1)

    @property
    def patch_limit(self) -> int:
        """The largest piece accepted, in patches: pieces have about (scale_resolution / patch_size)^2 patches;
        only extreme aspect ratios (beyond about 1000:1) make larger ones."""
        side = self.scale_resolution // self.patch_size
        return self.max_patches if self.max_patches is not None else 4 * side * side


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
    p = _core.plan_slices(width, height, c.max_slice_nums, c.scale_resolution, c.patch_size, c.square)
    return p.grid, p.pieces


def slice_image(image: ImageInput | Image, config: SliceConfig | None = None) -> SlicedImage:
    c = config or SliceConfig()
    rgb = load_rgb(image, c.max_pixels, c.max_side)
    try:  # a piece over the patch limit is refused from the plan, before any pixel is resized
        p, pieces = _core.slice_pieces(rgb, c.max_slice_nums, c.scale_resolution, c.patch_size, c.n_threads,
                                       c.patch_limit, c.square)
    except ValueError as e:
        raise ImageError(str(e)) from None
    return SlicedImage(p.grid, pieces, c)
