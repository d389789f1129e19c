"""The vision encoder: SigLIP-NaViT + resampler on ggml (cpp/graphs/siglip.cpp, resampler.cpp; cpp/runtime/encoder.cpp).

Loads llama.cpp-made mmproj files and ours alike; pieces in, [n_pieces, query_num, hidden] float32 out.
One encoder may be shared by threads: calls are serialised in the native object. Pieces larger than
`max_patches` are refused before anything is allocated; allocation failures are MemoryError.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import logs
from ._native import _core
from .chat_options import check_int
from .cpus import available_cpus
from .errors import ClosedError
from .families import Projector, detect_mmproj
from .image import ImageError
from .slicer import SliceConfig, SlicedImage, slice_image

POSITION_RULES = ("navit_2d", "flat_1d", "floor_2d")


def _positive(v: object) -> int | None:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def read_projector(path: str | os.PathLike[str]) -> Projector:
    """What the mmproj encodes for (ValueError for anything that is not a MiniCPM-V mmproj file)."""
    return detect_mmproj(dict(_core.read_gguf_info(str(path)).kv), str(path))


class VisionEncoder:
    def __init__(self, path: str | os.PathLike[str], n_threads: int | None = None, device: str = "cpu",
                 max_batch_bytes: int = 256 << 20, position_ids: str | None = None, blas: bool = True,
                 profile: bool = False, max_patches: int | None = None, use_mmap: bool = True,
                 int8: str = "auto") -> None:
        """`position_ids` overrides the file's rule ("navit_2d", "flat_1d", or llama.cpp's "floor_2d");
        `blas=False` keeps every matmul in ggml (what GPU devices use); `profile` times each graph node;
        `max_patches`: the largest piece accepted (default: 4 x a full scale_resolution^2 piece); `use_mmap`: CPU
        weights are the memory-mapped file (loading copies nothing; False reads them into memory); `int8`: block-
        quantized files (q8_0, q4_0) on integer dot products: "auto" runs our AVX512-VNNI kernel where the CPU has
        it (the matrices repacked at load; the file's f16 leftovers such as fc2 quantized to q8_0 blocks), else
        ggml's int8 kernels where the CPU has VNNI / DOTPROD / I8MM; "on" (ours, else ggml's), "ggml" (ggml's), or
        "off" (dequantized for OpenBLAS like f16). `native.int8_kernel` says which ran."""
        self._enc: _core.VisionEncoder | None = None
        self.path = Path(path)
        threads = available_cpus() if n_threads is None else check_int("n_threads", n_threads, 1)
        if max_patches is not None:
            check_int("max_patches", max_patches, 1)
        kv = dict(_core.read_gguf_info(str(self.path)).kv)
        self.projector = detect_mmproj(kv, str(self.path))
        if position_ids is not None and position_ids not in POSITION_RULES:
            raise ValueError(f"unknown position_ids rule {position_ids!r}")
        # the graph's variants are the file's keys; llama.cpp's files lack ours and get their family's
        defaults = {"minicpmv_edge.vision.position_ids": self.projector.position_ids or "navit_2d",
                    "minicpmv_edge.vision.padded_batch": "true" if self.projector.padded_batch else "false"}
        family = self.projector.family
        if family is not None:  # (our files carry these two keys; a file without them gets its family's)
            defaults["minicpmv_edge.vision.slicing"] = family.slicing
            defaults["minicpmv_edge.resampler.key_positions"] = family.resampler_keys
        overrides = {"minicpmv_edge.vision.position_ids": position_ids} if position_ids else {}
        logs.install()
        enc = _core.VisionEncoder(str(self.path), threads, device, defaults, overrides, max_batch_bytes, profile,
                                  blas, 0, use_mmap, int8)
        # prompt defaults the converter carried from the checkpoint (None: the family's)
        self.max_slice_nums: int | None = _positive(kv.get("minicpmv_edge.max_slice_nums"))
        use_image_id = kv.get("minicpmv_edge.use_image_id")
        self.use_image_id: bool | None = use_image_id if isinstance(use_image_id, bool) else None
        hp = enc.hparams
        self.slice_config = SliceConfig(scale_resolution=hp["image_size"], patch_size=hp["patch_size"],
                                        mean=tuple(hp["mean"]), std=tuple(hp["std"]), max_patches=max_patches,
                                        square=hp["square"])
        enc.max_patches = self.slice_config.patch_limit  # the native check uses the slicer's limit
        self._enc = enc
        self.query_num: int = hp["n_query"]
        self.hidden: int = hp["n_out"]
        # the prompt's pieces as one zero-padded batch (media.py passes pad_to)
        self.padded_batch: bool = hp["padded_batch"]

    @property
    def native(self) -> _core.VisionEncoder:
        enc = self._enc
        if enc is None:
            raise ClosedError(f"{self.path}: the encoder is closed")
        return enc

    @property
    def hparams(self) -> dict:
        return self.native.hparams

    def encode(self, pieces: list[np.ndarray] | SlicedImage, pad_to: int = 0) -> np.ndarray:
        """float32 [n_pieces, query_num, hidden] for float32 [3, H, W] pieces (or a SlicedImage). `pad_to` > 0:
        each piece as a member of a padded batch of that many patches (a family's vision_batch)."""
        arrays = pieces.pieces() if isinstance(pieces, SlicedImage) else list(pieces)
        return self.native.encode(arrays, check_int("pad_to", pad_to, 0))

    def encode_image(self, rgb: np.ndarray, max_slice_nums: int, pad_to: int = 0, n_threads: int | None = None
                     ) -> tuple[tuple[int, int] | None, int, np.ndarray]:
        """(slicing grid, pieces, embeddings [pieces * query_num, hidden]) of an RGB uint8 [H, W, 3] image, sliced
        with this file's resolution, patch size and normalisation (a piece over the patch limit is refused from the
        plan, before any pixel is resized)."""
        c = self.slice_config_for(max_slice_nums, n_threads)
        try:
            plan, pieces = _core.slice_pieces(rgb, c.max_slice_nums, c.scale_resolution, c.patch_size, c.n_threads,
                                              c.patch_limit, c.square)
        except ValueError as e:
            raise ImageError(str(e)) from None
        chw = [_core.normalize_chw(p, list(c.mean), list(c.std)) for p in pieces]
        return plan.grid, len(pieces), self.encode(chw, pad_to).reshape(-1, self.hidden)

    def slice_config_for(self, max_slice_nums: int, n_threads: int | None = None) -> SliceConfig:
        """This file's slicing (resolution, patch size, normalisation, patch limit) with `max_slice_nums`."""
        return replace(self.slice_config, max_slice_nums=max_slice_nums,
                       **({"n_threads": n_threads} if n_threads else {}))

    def slice(self, image, max_slice_nums: int = 9, n_threads: int | None = None) -> SlicedImage:
        """Slice an image with this file's resolution, patch size and normalisation."""
        return slice_image(image, self.slice_config_for(max_slice_nums, n_threads))

    def close(self) -> None:
        """Free the weights and buffers now (garbage collection does it otherwise)."""
        self._enc = None

    def __enter__(self) -> VisionEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
