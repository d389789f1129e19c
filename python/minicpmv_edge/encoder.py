"""The vision encoder on ggml: SigLIP-NaViT + resampler (cpp/graphs/siglip.cpp, resampler.cpp), or MiniCPM-V 4.6's
SigLIP2 tower with its insert merger and 2x2 merger (cpp/graphs/minicpmv4_6.cpp); cpp/runtime/encoder.cpp runs them.

Loads llama.cpp-made mmproj files and ours alike; pieces in, float32 rows out: `encode_rows` gives every piece's rows
in order ([total rows, hidden]). A resampler file gives `query_num` rows per piece; a 4.6 file (`merger`
"minicpmv4_6") gives rows that follow the piece's size and the `downsample` mode ("16x": (h/4)(w/4) per h x w
patches, "4x": (h/2)(w/2)), so `query_num` is 0 there and `piece_tokens` tells the count.
One encoder may be shared by threads: calls are serialised in the native object. Pieces larger than
`max_patches` are refused before anything is allocated; allocation failures are MemoryError.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
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

POSITION_RULES = ("navit_2d", "flat_1d", "floor_2d", "nearest_2d")
# MiniCPM-V 4.6's downsample modes -> the native merge factor per side (0: the file's default)
DOWNSAMPLE = {"16x": 4, "4x": 2}


def _positive(v: object) -> int | None:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def read_projector(path: str | os.PathLike[str]) -> Projector:
    """What the mmproj encodes for (ValueError for anything that is not a MiniCPM-V mmproj file)."""
    return detect_mmproj(dict(_core.read_gguf_info(str(path)).kv), str(path))


class VisionEncoder:
    def __init__(self, path: str | os.PathLike[str], n_threads: int | None = None, device: str = "cpu",
                 max_batch_bytes: int = 256 << 20, position_ids: str | None = None, blas: bool = True,
                 profile: bool = False, max_patches: int | None = None, use_mmap: bool = True,
                 int8: str = "auto", attention: str = "auto") -> None:
        """`position_ids` overrides the file's rule ("navit_2d", "flat_1d", "nearest_2d" (4.6's), or llama.cpp's
        "floor_2d"); `blas=False` keeps every matmul in ggml (what GPU devices use); `profile` times each graph
        node;
        `max_patches`: the largest piece accepted (default: 4 x a full scale_resolution^2 piece); `use_mmap`: CPU
        weights are the memory-mapped file (loading copies nothing; False reads them into memory); `int8`: block-
        quantized files (q8_0, q4_0) on integer dot products: "auto" runs our fastest int8 kernel the CPU has,
        AVX512-VNNI, else AVX-VNNI (Intel client cores without AVX-512), else AVX2, else on aarch64 I8MM (the int8
        matrix multiply: Apple M2+, Graviton 3/4), else NEON SDOT (the dot-product extension) (the matrices
        repacked at load; the file's f16 leftovers such as fc2 quantized to q8_0 blocks; the kernels give the same
        bits), else ggml's int8 kernels where the CPU has VNNI / DOTPROD / I8MM; "on" (ours, else ggml's), "vnni",
        "avxvnni", "avx2", "i8mm" or "neon" (that kernel of ours, a ValueError where the CPU lacks it; "avxvnni"
        runs on AVX-512 machines through AVX512-VL), "ggml" (ggml's), or "off" (dequantized for OpenBLAS like
        f16). `native.int8_kernel` says which ran. `attention`:
        "auto" runs our fused int8 attention wherever our int8 kernel runs the file's matrices (per-row cosine
        >= 0.9999 against f32: tests/test_int8_attention.py; on the x86 kernels: AVX512-VNNI's, and a 256-bit one
        where the products run on AVX-VNNI or AVX2), else f32;
        "int8" on any file (ValueError where none of our int8 kernels runs attention here); "f32" (OpenBLAS, or
        ggml's flash attention). `native.attention_kernel`."""
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
                    "minicpmv_edge.vision.padded_batch": "true" if self.projector.padded_batch else "false",
                    "minicpmv_edge.resampler.temporal": "true" if self.projector.temporal else "false"}
        family = self.projector.family
        if family is not None:  # (our files carry these keys; a file without them gets its family's)
            defaults["minicpmv_edge.vision.slicing"] = family.slicing
            defaults["minicpmv_edge.resampler.key_positions"] = family.resampler_keys
            # (the position table's side of llama.cpp's 4.6 files, which lack the key, is the table's own: the
            # square root of its rows)
        overrides = {"minicpmv_edge.vision.position_ids": position_ids} if position_ids else {}
        logs.install()
        enc = _core.VisionEncoder(str(self.path), threads, device, defaults, overrides, max_batch_bytes, profile,
                                  blas, 0, use_mmap, int8, attention)
        # prompt defaults the converter carried from the checkpoint (None: the family's)
        self.max_slice_nums: int | None = _positive(kv.get("minicpmv_edge.max_slice_nums"))
        use_image_id = kv.get("minicpmv_edge.use_image_id")
        self.use_image_id: bool | None = use_image_id if isinstance(use_image_id, bool) else None
        hp = enc.hparams
        # the pixel rules: our files name them; llama.cpp's get their family's ("pil" without one)
        preprocess = kv.get("minicpmv_edge.vision.preprocess")
        if not isinstance(preprocess, str):
            preprocess = family.preprocess if family is not None else "pil"
        self.slice_config = SliceConfig(scale_resolution=hp["image_size"], patch_size=hp["patch_size"],
                                        mean=tuple(hp["mean"]), std=tuple(hp["std"]), max_patches=max_patches,
                                        square=hp["square"], preprocess=preprocess)
        enc.max_patches = self.slice_config.patch_limit  # the native check uses the slicer's limit
        self._enc = enc
        # "resampler" or "minicpmv4_6"; the latter's downsample modes this file runs ("16x" needs the insert
        # merger's tensors) and the one a call without `downsample` gets
        self.merger: str = hp["merger"]
        self.downsample_modes: tuple[str, ...] = tuple(hp["downsample_modes"])
        self.default_downsample: str | None = hp["default_downsample"]
        # rows per piece of a resampler file; 0 for a 4.6 file, whose rows follow each piece's size (piece_tokens)
        self.query_num: int = hp["n_query"]
        self.hidden: int = hp["n_out"]
        # the prompt's pieces as one zero-padded batch (media.py passes pad_to)
        self.padded_batch: bool = hp["padded_batch"]
        # MiniCPM-V 4.5's temporal resampler: video frames packed into units (encode_units)
        self.temporal: bool = hp["temporal"]

    @property
    def native(self) -> _core.VisionEncoder:
        enc = self._enc
        if enc is None:
            raise ClosedError(f"{self.path}: the encoder is closed")
        return enc

    @property
    def hparams(self) -> dict:
        return self.native.hparams

    def _mode(self, downsample: str | None) -> int:
        """The native downsample argument of "16x" / "4x" / None (the file's default)."""
        if downsample is None:
            return 0
        if not isinstance(downsample, str) or downsample not in DOWNSAMPLE:
            raise ValueError(f"downsample must be '16x', '4x' or None (the file's default), not {downsample!r}")
        return DOWNSAMPLE[downsample]

    def encode_rows(self, pieces: list[np.ndarray] | SlicedImage, pad_to: int = 0, downsample: str | None = None
                    ) -> np.ndarray:
        """float32 [total rows, hidden]: every piece's rows (piece_tokens each), pieces in order, for float32
        [3, H, W] pieces (or a SlicedImage). `pad_to` > 0: each piece as a member of a padded batch of that many
        patches (a family's vision_batch). `downsample`: MiniCPM-V 4.6's "16x" or "4x" (None: the file's default;
        a resampler file takes None only)."""
        arrays = pieces.pieces() if isinstance(pieces, SlicedImage) else list(pieces)
        return self.native.encode(arrays, check_int("pad_to", pad_to, 0), self._mode(downsample))

    def encode(self, pieces: list[np.ndarray] | SlicedImage, pad_to: int = 0, downsample: str | None = None
               ) -> np.ndarray:
        """float32 [n_pieces, rows per piece, hidden] for pieces that give the same number of rows (a resampler
        file's query_num, or 4.6 pieces of one size); pieces whose counts differ are refused: encode_rows returns
        those. Arguments as encode_rows."""
        arrays = pieces.pieces() if isinstance(pieces, SlicedImage) else list(pieces)
        counts = self._counts(arrays, downsample)
        if counts is not None and len(set(counts)) > 1:
            raise ValueError(f"the pieces give different numbers of rows ({', '.join(map(str, counts))}): "
                             "encode_rows returns them one after the other")
        rows = self.encode_rows(arrays, pad_to, downsample)
        per_piece = counts[0] if counts else self.query_num
        return rows.reshape(len(arrays), per_piece, self.hidden)

    def encode_units(self, pieces: list[np.ndarray], units: Sequence[tuple[Sequence[int], Sequence[int]]]
                     ) -> np.ndarray:
        """float32 [n_units, query_num, hidden]: MiniCPM-V 4.5's packed units (a file with `temporal`). Each unit
        is (indices into `pieces`, one time id per index; -1: none): the tower runs on every frame-piece, then the
        resampler attends the unit's frame-pieces as one key sequence, each frame's keys carrying its 2-D position
        and its time id's code. A unit's pieces must share one size."""
        if not self.temporal:
            raise ValueError(f"{self.path}: packed frames need the temporal resampler (MiniCPM-V 4.5), which this "
                             "file does not have")
        norm: list[tuple[list[int], list[int]]] = []
        for k, (index, ids) in enumerate(units):
            pick = [check_int("piece index", i, 0) for i in index]
            times = [check_int("time id", t, -1) for t in ids]
            if not pick or len(pick) != len(times):
                raise ValueError(f"packed unit {k}: needs one time id per piece and at least one piece")
            norm.append((pick, times))
        rows = self.native.encode_units(list(pieces), norm)
        return rows.reshape(len(norm), self.query_num, self.hidden)

    def _counts(self, arrays: list, downsample: str | None) -> list[int] | None:
        """Each piece's rows, or None when some piece is malformed (the native encode then says how)."""
        ps = self.slice_config.patch_size
        shapes = [np.shape(a) for a in arrays]
        if any(len(s) != 3 or s[1] <= 0 or s[2] <= 0 or s[1] % ps or s[2] % ps for s in shapes):
            return None
        mode = self._mode(downsample)
        try:
            return [self.native.tokens(s[1] // ps, s[2] // ps, mode) for s in shapes]
        except ValueError:
            return None

    def piece_tokens(self, width_px: int, height_px: int, downsample: str | None = None) -> int:
        """The rows a width_px x height_px piece gives: query_num for a resampler file; for a 4.6 file (h/4)(w/4)
        of its h x w patches in 16x mode, (h/2)(w/2) in 4x (ValueError for a size or mode the file cannot encode)."""
        ps = self.slice_config.patch_size
        width_px, height_px = check_int("width_px", width_px, 1), check_int("height_px", height_px, 1)
        if width_px % ps or height_px % ps:
            raise ValueError(f"a {width_px}x{height_px} piece: sides must be multiples of the patch size {ps}")
        return self.native.tokens(height_px // ps, width_px // ps, self._mode(downsample))

    def encode_image(self, rgb: np.ndarray, max_slice_nums: int, pad_to: int = 0, n_threads: int | None = None,
                     downsample: str | None = None) -> tuple[tuple[int, int] | None, int, np.ndarray]:
        """(slicing grid, pieces, embeddings [total rows, hidden]) of an RGB uint8 [H, W, 3] image, sliced with
        this file's resolution, patch size, pixel rules and normalisation (4.6: piece sides in the `downsample`
        mode's unit); a piece over the patch limit is refused from the plan, before any pixel is resized."""
        grid, chw = self.pieces_of(rgb, max_slice_nums, n_threads, downsample)
        return grid, len(chw), self.encode_rows(chw, pad_to, downsample)

    def pieces_of(self, rgb: np.ndarray, max_slice_nums: int, n_threads: int | None = None,
                  downsample: str | None = None) -> tuple[tuple[int, int] | None, list[np.ndarray]]:
        """(slicing grid, normalised float32 [3, H, W] pieces: overview, then slices row-major) of an RGB uint8
        image, as encode_image slices it."""
        c = self.slice_config_for(max_slice_nums, n_threads, downsample)
        try:
            plan, pieces = _core.slice_pieces(rgb, c.max_slice_nums, c.scale_resolution, c.patch_size, c.n_threads,
                                              c.patch_limit, c.square, unit=c.size_unit, resize=c.resize_kind)
        except ValueError as e:
            raise ImageError(str(e)) from None
        return plan.grid, [_core.normalize_chw(p, list(c.mean), list(c.std), kind=c.resize_kind) for p in pieces]

    def encode_group(self, frames: Sequence[np.ndarray], time_ids: Sequence[int], max_slice_nums: int,
                     n_threads: int | None = None) -> tuple[tuple[int, int] | None, int, np.ndarray]:
        """(the first frame's slicing grid, packed units, embeddings [units x query_num, hidden]) of one group of
        RGB uint8 frames packed by their time ids (4.5's temporal_ids, fact sheet §5.3): each frame sliced as an
        image; unit s holds piece s of every frame (overview first, then the slices), so all frames must give the
        same pieces (ValueError otherwise)."""
        if len(frames) != len(time_ids) or not frames:
            raise ValueError(f"a packed group needs one time id per frame, got {len(frames)} frames and "
                             f"{len(time_ids)} ids")
        sliced = [self.pieces_of(rgb, max_slice_nums, n_threads) for rgb in frames]
        grid, first = sliced[0]
        for k, (g, pieces) in enumerate(sliced[1:], 1):
            shapes = [p.shape for p in pieces]
            if g != grid or shapes != [p.shape for p in first]:
                raise ValueError(f"frame {k} of a packed group is sliced into {len(pieces)} pieces of sizes "
                                 f"{[s[1:] for s in shapes]}, frame 0 into {len(first)} of "
                                 f"{[p.shape[1:] for p in first]}: the frames of one group must have one size")
        n = len(first)
        pieces = [p for s in range(n) for _, ps in sliced for p in ps[s:s + 1]]  # unit-major: piece s of each frame
        units = [(list(range(s * len(frames), (s + 1) * len(frames))), list(time_ids)) for s in range(n)]
        rows = self.encode_units(pieces, units)
        return grid, n, rows.reshape(n * self.query_num, self.hidden)

    def slice_config_for(self, max_slice_nums: int, n_threads: int | None = None, downsample: str | None = None
                         ) -> SliceConfig:
        """This file's slicing (resolution, patch size, pixel rules, normalisation, patch limit) with
        `max_slice_nums`; for a 4.6 file, piece sides in multiples of the `downsample` mode's unit (patch x 4 in
        16x, x 2 in 4x; None: the file's default mode)."""
        mode = self._mode(downsample)
        if self.merger == "minicpmv4_6":
            mode = mode or DOWNSAMPLE[self.default_downsample or "16x"]
            self.native.tokens(mode, mode, mode)  # a mode the file cannot run: the native error names it
            unit = self.slice_config.patch_size * mode
        else:
            self.native.tokens(1, 1, mode)  # a resampler file takes no mode: the native error says so
            unit = 0
        return replace(self.slice_config, max_slice_nums=max_slice_nums, size_unit=unit,
                       **({"n_threads": n_threads} if n_threads else {}))

    def slice(self, image, max_slice_nums: int = 9, n_threads: int | None = None, downsample: str | None = None
              ) -> SlicedImage:
        """Slice an image with this file's resolution, patch size, pixel rules and normalisation (4.6: piece sides
        in the `downsample` mode's unit)."""
        return slice_image(image, self.slice_config_for(max_slice_nums, n_threads, downsample))

    def close(self) -> None:
        """Free the weights and buffers now (garbage collection does it otherwise)."""
        self._enc = None

    def __enter__(self) -> VisionEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
