"""Streaming safetensors reader and writer.

The safetensors package cannot hand bf16 tensors to numpy, and real MiniCPM-V checkpoints are bf16, so this
module reads the format directly: an 8-byte little-endian header length, a JSON header, then raw tensor bytes.
Tensors are memory-mapped one at a time, so converting a 16 GB checkpoint never holds it in memory.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# safetensors dtype name -> (numpy storage dtype, bytes per element)
_DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # stored raw, widened to f32 on read
    "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A checkpoint file or folder is missing, truncated or not what MiniCPM-V expects."""


def load_json(path: Path) -> dict:
    """A checkpoint's JSON file (config, tokenizer...) as a dict, or CheckpointError naming the file."""
    if not path.exists():
        raise CheckpointError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes live."""

    file: Path
    dtype: str  # safetensors name, e.g. "BF16"
    shape: tuple[int, ...]
    begin: int  # absolute byte offset in the file
    end: int


def _read_header(path: Path) -> dict[str, TensorEntry]:
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            raw_len = f.read(8)
            if len(raw_len) < 8:
                raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header)")
            (n,) = struct.unpack("<Q", raw_len)
            if n > _MAX_HEADER or 8 + n > size:
                raise CheckpointError(
                    f"{path}: truncated or corrupt safetensors header (header says {n} bytes, file has {size})"
                )
            header = json.loads(f.read(n))
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: file not found") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    base = 8 + n
    out: dict[str, TensorEntry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(int(s) for s in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: tensor {name!r} has a malformed header entry") from e
        if dtype not in _DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
        expected = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype].itemsize
        if end - begin != expected:
            raise CheckpointError(f"{path}: tensor {name!r} is {end - begin} bytes, shape {shape} needs {expected}")
        if base + end > size:
            raise CheckpointError(
                f"{path}: truncated: tensor {name!r} ends at byte {base + end}, file has {size} bytes"
            )
        out[name] = TensorEntry(path, dtype, shape, base + begin, base + end)
    return out


def widened(arr: np.ndarray, dtype: str) -> np.ndarray:
    """Stored values as float32 (floating types: bf16 bit patterns widened) or their own integer type; a copy."""
    if dtype == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    if arr.dtype.kind == "f":
        return arr.astype(np.float32)
    return np.array(arr)


class TensorFile:
    """What the converter asks of a checkpoint's tensors (`entries`: name -> an entry with a `shape`); `get` and
    `close` are the format's."""

    folder: Path
    entries: dict

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def keys(self) -> list[str]:
        return list(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name].shape

    def get(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> TensorFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SafetensorsCheckpoint(TensorFile):
    """All tensors of a checkpoint folder (single file or sharded with an index), read lazily."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        index = self.folder / "model.safetensors.index.json"
        single = self.folder / "model.safetensors"
        if index.exists():
            try:
                weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CheckpointError(f"{index}: not a safetensors index (no 'weight_map')") from e
            files = sorted({self.folder / f for f in weight_map.values()})
        elif single.exists():
            weight_map, files = {}, [single]
        else:
            raise CheckpointError(f"{self.folder}: no model.safetensors or model.safetensors.index.json")
        self.entries: dict[str, TensorEntry] = {}
        for f in files:
            self.entries.update(_read_header(f))
        missing = [k for k in weight_map if k not in self.entries]
        if missing:
            raise CheckpointError(f"{index}: tensor {missing[0]!r} listed in the index is in no shard")
        self._maps: dict[Path, mmap.mmap] = {}

    def get(self, name: str) -> np.ndarray:
        """The tensor as float32 (floating types) or its own integer type; a copy, independent of the file."""
        e = self.entries[name]
        m = self._maps.get(e.file)
        if m is None:
            with e.file.open("rb") as f:
                m = self._maps[e.file] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        arr = np.frombuffer(m, dtype=_DTYPES[e.dtype], count=(e.end - e.begin) // _DTYPES[e.dtype].itemsize,
                            offset=e.begin).reshape(e.shape)
        return widened(arr, e.dtype)

    def close(self) -> None:
        for m in self._maps.values():
            m.close()
        self._maps.clear()


def _bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns, round to nearest even (as torch does)."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    return ((bits + rounding) >> 16).astype(np.uint16)


def to_storage(a: np.ndarray, dtype: str) -> np.ndarray:
    """Round float32 values to what a checkpoint of `dtype` stores (used by generators and tests)."""
    if dtype == "F32":
        return a.astype(np.float32)
    if dtype == "F16":
        return a.astype(np.float16).astype(np.float32)
    if dtype == "BF16":
        return (_bf16_bits(a).astype(np.uint32) << 16).view(np.float32)
    raise ValueError(f"unsupported storage dtype {dtype}")


def write_safetensors(path: Path, tensors: Iterator[tuple[str, np.ndarray]] | list[tuple[str, np.ndarray]],
                      dtype: str, metadata: dict[str, str] | None = None) -> None:
    """Write float tensors as `dtype` (F32/F16/BF16); the file appears only once complete."""
    items = list(tensors)
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    itemsize = _DTYPES[dtype].itemsize
    offset = 0
    for name, a in items:
        n = int(np.prod(a.shape, dtype=np.int64)) * itemsize
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, a in items:
            if dtype == "BF16":
                f.write(_bf16_bits(a).tobytes())
            else:
                f.write(np.ascontiguousarray(a, dtype=_DTYPES[dtype]).tobytes())
    os.replace(tmp, path)
