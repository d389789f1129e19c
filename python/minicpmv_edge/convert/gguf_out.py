"""Write a GGUF file tensor by tensor, atomically.

All tensor infos are declared first (shapes are known from the checkpoint header), then each tensor is read,
converted and written in turn, so peak memory is one tensor, not the model. The file is written under a temporary
name and renamed by the caller's `commit()`, so a failure leaves nothing behind.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

FILE_TYPES: dict[str, tuple[QT, int]] = {  # --outtype -> (tensor type for big matrices, general.file_type)
    "f32": (QT.F32, 0),
    "f16": (QT.F16, 1),
    "q8_0": (QT.Q8_0, 7),
    "bf16": (QT.BF16, 32),
}


def check_in_out(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> tuple[Path, Path]:
    """An existing input, and an output that is not the input."""
    src_p, dst_p = Path(src), Path(dst)
    if not src_p.is_file():
        raise FileNotFoundError(f"{src_p}: file not found")
    if src_p.resolve() == dst_p.resolve():
        raise ValueError(f"{dst_p}: output would overwrite the input")
    return src_p, dst_p


@dataclass(frozen=True)
class PlannedTensor:
    name: str  # GGUF name
    shape: tuple[int, ...]  # numpy order (ggml ne reversed)
    qtype: QT
    make: Callable[[], np.ndarray]  # float32 values in numpy order, produced only when written


def encode(a: np.ndarray, qtype: QT) -> np.ndarray:
    """float32 values -> the bytes GGUF stores for `qtype`."""
    if qtype == QT.F32:
        return np.ascontiguousarray(a, dtype=np.float32)
    if qtype == QT.F16:
        return np.ascontiguousarray(a, dtype=np.float16)
    return gguf.quants.quantize(np.ascontiguousarray(a, dtype=np.float32), qtype)


def matrix_type(shape: tuple[int, ...], wanted: QT, fallback: QT = QT.F16) -> QT:
    """Block-quantized types need rows that are a whole number of blocks; other rows fall back."""
    block, _ = gguf.GGML_QUANT_SIZES[wanted]
    return wanted if shape[-1] % block == 0 else fallback


class GGUFFile:
    """One output file: key/values through `writer`, tensors through `write_tensors`, then `commit()`."""

    def __init__(self, path: Path, arch: str) -> None:
        self.path = path
        self.tmp = path.with_name(path.name + ".partial")
        self.writer = gguf.GGUFWriter(self.tmp, arch)

    def write_tensors(self, tensors: list[PlannedTensor], progress: Callable[[], None] | None = None) -> None:
        w = self.writer
        for t in tensors:
            if t.qtype in (QT.F32, QT.F16):
                dt = np.dtype(np.float32 if t.qtype == QT.F32 else np.float16)
                w.add_tensor_info(t.name, t.shape, dt, int(np.prod(t.shape, dtype=np.int64)) * dt.itemsize)
            else:
                byte_shape = gguf.quant_shape_to_byte_shape(t.shape, t.qtype)
                w.add_tensor_info(t.name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), raw_dtype=t.qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for t in tensors:
            a = t.make()
            if tuple(a.shape) != t.shape:
                raise ValueError(f"{self.path.name}: tensor {t.name} has shape {a.shape}, planned {t.shape}")
            data = encode(a, t.qtype)
            w.write_tensor_data(data)
            if progress:
                progress()
        w.close()

    def discard(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)

    def commit(self) -> None:
        os.replace(self.tmp, self.path)
