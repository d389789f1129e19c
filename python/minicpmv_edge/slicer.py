"""MiniCPM-V's image slicing: an overview plus a grid of slices, resized and normalised as the original
processor does (the original `image_processing_minicpmv.py`). The work is in C++ (cpp/preprocess/).

MiniCPM-V 4.6 (transformers 5.23.0 `image_processing_minicpmv4_6.py`, its default torchvision processor) keeps the
plan with piece sides in multiples of `size_unit` (patch x 4 in its "16x" mode, x 2 in "4x"), and `preprocess`
"torchvision" switches the three pixel rules it changes: torch's uint8 bicubic (int16 weights), normalisation
fused in float32 and transparency composited onto white."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._native import _core
from .chat_options import check_int
from .cpus import available_cpus
from .image import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, Image, ImageError, ImageInput, load_rgb

# preprocess -> (the native resize and normalisation kind, load_rgb's alpha)
PREPROCESS = {"pil": ("pil", "drop"), "torchvision": ("torch", "white")}


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
    # piece sides are multiples of this (0: patch_size); MiniCPM-V 4.6: patch_size * 4 ("16x"), * 2 ("4x")
    size_unit: int = 0
    # "pil": Pillow's bicubic, (x / 255 - mean) / std with the rescale in float64, alpha dropped (2.6 and older);
    # "torchvision": torch's uint8 bicubic, (x - 255 mean) / (255 std) in float32, alpha composited onto white (4.6)
    preprocess: str = "pil"

    def __post_init__(self) -> None:
        check_int("max_slice_nums", self.max_slice_nums, 1)
        check_int("patch_size", self.patch_size, 1)
        check_int("scale_resolution", self.scale_resolution, self.patch_size)
        check_int("size_unit", self.size_unit, 0)
        if self.size_unit % self.patch_size:
            raise ValueError(f"size_unit must be a multiple of patch_size {self.patch_size} (or 0), "
                             f"not {self.size_unit}")
        if not isinstance(self.preprocess, str) or self.preprocess not in PREPROCESS:
            raise ValueError(f"preprocess must be one of {', '.join(map(repr, PREPROCESS))}, "
                             f"not {self.preprocess!r}")
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

    @property
    def resize_kind(self) -> str:
        """The native resampler and normalisation: "pil" or "torch"."""
        return PREPROCESS[self.preprocess][0]

    @property
    def alpha(self) -> str:
        """load_rgb's transparency rule: "drop" or "white"."""
        return PREPROCESS[self.preprocess][1]


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
        return [_core.normalize_chw(p, list(c.mean), list(c.std), kind=c.resize_kind) for p in self.pieces_u8]

    def n_tokens(self, query_num: int) -> int:
        """Image embedding tokens the language model receives (query_num per piece)."""
        return query_num * len(self.pieces_u8)


def plan(width: int, height: int, config: SliceConfig | None = None) -> tuple[tuple[int, int] | None, list]:
    """(grid, [(width, height) of each piece]) without touching pixels."""
    c = config or SliceConfig()
    p = _core.plan_slices(width, height, c.max_slice_nums, c.scale_resolution, c.patch_size, c.square,
                          unit=c.size_unit, resize=c.resize_kind)
    return p.grid, p.pieces


def slice_image(image: ImageInput | Image, config: SliceConfig | None = None) -> SlicedImage:
    c = config or SliceConfig()
    rgb = load_rgb(image, c.max_pixels, c.max_side, alpha=c.alpha)
    try:  # a piece over the patch limit is refused from the plan, before any pixel is resized
        p, pieces = _core.slice_pieces(rgb, c.max_slice_nums, c.scale_resolution, c.patch_size, c.n_threads,
                                       c.patch_limit, c.square, unit=c.size_unit, resize=c.resize_kind)
    except ValueError as e:
        raise ImageError(str(e)) from None
    return SlicedImage(p.grid, pieces, c)
