"""PyTorch's `torch.save` checkpoints (`pytorch_model.bin`) read and written without torch and without running code.

The format (PyTorch's serialization notes, docs/sources.md): a zip archive, every entry under one top folder, holding
`data.pkl` (a pickle of the state dict) and one raw little-endian file per storage, `data/<key>`, stored uncompressed.
The pickle names each tensor as a call of `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`
whose storage is a persistent id ('storage', <dtype's storage class>, key, location, numel).

Reading: an unpickler that resolves only those names (and `collections.OrderedDict`) to inert stand-ins, so a
checkpoint that names any other global (code a real `torch.load` would run) is refused; tensors are then memory-mapped
from their zip entries one at a time. Writing (the test checkpoints): the same archive, pickle opcodes emitted here,
which `torch.load` reads (with `weights_only=True` too).
"""

from __future__ import annotations

import io
import mmap
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .safetensors_io import CheckpointError, TensorFile, _bf16_bits, widened

# torch's storage class name -> (safetensors-style dtype name, numpy storage dtype)
_STORAGES: dict[str, tuple[str, np.dtype]] = {
    "FloatStorage": ("F32", np.dtype("<f4")),
    "HalfStorage": ("F16", np.dtype("<f2")),
    "BFloat16Storage": ("BF16", np.dtype("<u2")),
    "DoubleStorage": ("F64", np.dtype("<f8")),
    "LongStorage": ("I64", np.dtype("<i8")),
    "IntStorage": ("I32", np.dtype("<i4")),
    "ShortStorage": ("I16", np.dtype("<i2")),
    "CharStorage": ("I8", np.dtype("i1")),
    "ByteStorage": ("U8", np.dtype("u1")),
    "BoolStorage": ("BOOL", np.dtype("?")),
}
_DTYPE_STORAGE = {"F32": "FloatStorage", "F16": "HalfStorage", "BF16": "BFloat16Storage"}
_MAX_PICKLE = 256 << 20  # a state dict's pickle is names and shapes: a few MB for the largest checkpoints


@dataclass(frozen=True)
class _StorageType:
    name: str


@dataclass(frozen=True)
class _Storage:
    kind: str  # key of _STORAGES
    key: str
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: object, offset: object, size: object, stride: object, *rest: object) -> _TensorRef:
    if not isinstance(storage, _Storage) or not isinstance(offset, int) or not isinstance(size, tuple) or \
            not isinstance(stride, tuple) or len(size) != len(stride) or \
            not all(isinstance(x, int) and x >= 0 for x in (*size, *stride)) or offset < 0:
        raise CheckpointError("a tensor record of the pickle is malformed")
    return _TensorRef(storage, offset, tuple(size), tuple(stride))


def _rebuild_parameter(data: object, *rest: object) -> object:
    return data  # an nn.Parameter is its tensor here


class _Unpickler(pickle.Unpickler):
    """Resolves only the names a state dict of tensors uses; anything else is refused, never imported."""

    def __init__(self, data: bytes, where: str) -> None:
        super().__init__(io.BytesIO(data))
        self.where = where

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in _STORAGES:
            return _StorageType(name)
        raise CheckpointError(f"{self.where}: the pickle names {module}.{name}, which is not part of a tensor "
                              "state dict; refusing to load it (it could run code)")

    def persistent_load(self, pid: object) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)
                and isinstance(pid[2], str) and isinstance(pid[4], int) and pid[4] >= 0):
            raise CheckpointError(f"{self.where}: a storage record of the pickle is malformed")
        return _Storage(pid[1].name, pid[2], pid[4])


@dataclass(frozen=True)
class _Entry:
    dtype: str
    shape: tuple[int, ...]
    array_args: tuple[int, int, tuple[int, ...]]  # (data start in the file, element offset, element strides)
    storage_dtype: np.dtype


def _data_start(f: io.BufferedReader, info: zipfile.ZipInfo, where: str) -> int:
    """The file offset of an uncompressed entry's bytes (after its local header)."""
    f.seek(info.header_offset)
    head = f.read(30)
    if len(head) != 30 or head[:4] != b"PK\x03\x04":
        raise CheckpointError(f"{where}: entry {info.filename!r} has no valid zip header")
    n_name, n_extra = struct.unpack("<HH", head[26:30])
    return info.header_offset + 30 + n_name + n_extra


class TorchCheckpoint(TensorFile):
    """The tensors of a `torch.save` zip checkpoint (`pytorch_model.bin`), read lazily."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.folder = self.path.parent
        where = str(self.path)
        try:
            zf = zipfile.ZipFile(self.path)
        except FileNotFoundError as e:
            raise CheckpointError(f"{where}: file not found") from e
        except (zipfile.BadZipFile, OSError) as e:
            raise CheckpointError(f"{where}: not a PyTorch zip checkpoint (truncated, or the legacy pre-1.6 format: "
                                  f"{e})") from e
        with zf:
            infos = {i.filename: i for i in zf.infolist()}
            pkl = [n for n in infos if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkl) != 1:
                raise CheckpointError(f"{where}: no data.pkl in one top folder (not a torch.save checkpoint)")
            top = pkl[0][: -len("data.pkl")]
            if infos[pkl[0]].file_size > _MAX_PICKLE:
                raise CheckpointError(f"{where}: its data.pkl is {infos[pkl[0]].file_size} bytes, more than a state "
                                      "dict's")
            try:
                raw = zf.read(pkl[0])
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise CheckpointError(f"{where}: data.pkl cannot be read ({e})") from e
        try:
            state = _Unpickler(raw, where).load()
        except CheckpointError:
            raise
        except Exception as e:  # malformed pickles raise anything; none of it runs code here
            raise CheckpointError(f"{where}: data.pkl is not a valid pickle ({type(e).__name__}: {e})") from e
        if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, _TensorRef)
                                                  for k, v in state.items()):
            raise CheckpointError(f"{where}: data.pkl is not a dict of named tensors")
        size = self.path.stat().st_size
        self.entries: dict[str, _Entry] = {}
        with self.path.open("rb") as f:
            starts: dict[str, tuple[int, int]] = {}
            for name, ref in state.items():
                kind, dtype = _STORAGES[ref.storage.kind]
                info = infos.get(f"{top}data/{ref.storage.key}")
                if info is None:
                    raise CheckpointError(f"{where}: tensor {name!r}: storage {ref.storage.key!r} is not in the "
                                          "archive")
                if info.compress_type != zipfile.ZIP_STORED:
                    raise CheckpointError(f"{where}: storage {ref.storage.key!r} is compressed (torch stores them "
                                          "uncompressed)")
                if ref.storage.key not in starts:
                    starts[ref.storage.key] = (_data_start(f, info, where), info.file_size)
                start, nbytes = starts[ref.storage.key]
                if nbytes != ref.storage.numel * dtype.itemsize or start + nbytes > size:
                    raise CheckpointError(f"{where}: storage {ref.storage.key!r} of tensor {name!r} is truncated "
                                          f"({nbytes} bytes in the archive, {ref.storage.numel} elements expected, "
                                          f"the file has {size} bytes)")
                last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride, strict=True)) \
                    if all(ref.shape) else ref.offset - 1
                if last >= ref.storage.numel:
                    raise CheckpointError(f"{where}: tensor {name!r} reads past the end of its storage")
                self.entries[name] = _Entry(kind, ref.shape, (start, ref.offset, ref.stride), dtype)
        self._map: mmap.mmap | None = None

    def get(self, name: str) -> np.ndarray:
        """The tensor as float32 (floating types) or its own integer type; a copy, independent of the file."""
        e = self.entries[name]
        if self._map is None:
            with self.path.open("rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        start, offset, stride = e.array_args
        item = e.storage_dtype.itemsize
        if not all(e.shape):
            arr = np.zeros(e.shape, dtype=e.storage_dtype)
        else:
            base = np.frombuffer(self._map, dtype=e.storage_dtype, offset=start + offset * item,
                                 count=1 + sum((n - 1) * s for n, s in zip(e.shape, stride, strict=True)))
            arr = np.lib.stride_tricks.as_strided(base, e.shape, tuple(s * item for s in stride), writeable=False)
        return widened(arr, e.dtype)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None


# --- writing -------------------------------------------------------------------------------------------------------

def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _int(n: int) -> bytes:
    if -(1 << 31) <= n < (1 << 31):
        return b"J" + struct.pack("<i", n)
    b = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(b)]) + b


def _tuple(items: list[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _pickle(names: list[tuple[str, tuple[int, ...]]], dtype: str) -> bytes:
    """Protocol 2 opcodes of an OrderedDict of contiguous tensors, tensor i on storage "i"."""
    od = b"ccollections\nOrderedDict\n)R"
    out = [b"\x80\x02", od, b"("]
    for i, (name, shape) in enumerate(names):
        stride = [int(np.prod(shape[k + 1:], dtype=np.int64)) for k in range(len(shape))]
        numel = int(np.prod(shape, dtype=np.int64))
        pid = _tuple([_str("storage"), f"ctorch\n{_DTYPE_STORAGE[dtype]}\n".encode(), _str(str(i)), _str("cpu"),
                      _int(numel)]) + b"Q"
        args = _tuple([pid, _int(0), _tuple([_int(n) for n in shape]), _tuple([_int(s) for s in stride]), b"\x89",
                       od])
        out += [_str(name), b"ctorch._utils\n_rebuild_tensor_v2\n", args, b"R"]
    out += [b"u", b"."]
    return b"".join(out)


def write_torch_checkpoint(path: Path, tensors: list[tuple[str, tuple[int, ...], Callable[[], np.ndarray]]],
                           dtype: str) -> None:
    """Write float tensors as `dtype` (F32/F16/BF16) the way torch.save lays out a state dict: entries under one
    top folder, each storage's bytes aligned to 64 in the file; the file appears only once complete. `tensors`:
    (name, shape, make), each made only when written."""
    top = path.stem or "archive"
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        def put(name: str, data: bytes) -> None:
            info = zipfile.ZipInfo(f"{top}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            at = zf.fp.tell() if zf.fp is not None else 0
            pad = -(at + 30 + len(info.filename.encode()) + 4) % 64
            info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad  # torch's own padding record
            zf.writestr(info, data, compress_type=zipfile.ZIP_STORED)

        put("data.pkl", _pickle([(n, tuple(shape)) for n, shape, _ in tensors], dtype))
        put("byteorder", b"little")
        for i, (name, shape, make) in enumerate(tensors):
            a = make()
            if tuple(a.shape) != tuple(shape):
                raise ValueError(f"{path.name}: tensor {name} has shape {a.shape}, planned {shape}")
            data = _bf16_bits(a).tobytes() if dtype == "BF16" else \
                np.ascontiguousarray(a, dtype="<f4" if dtype == "F32" else "<f2").tobytes()
            put(f"data/{i}", data)
        put("version", b"3\n")
    os.replace(tmp, path)
