"""Image embeddings kept for reuse: a second question about the same picture skips the vision encoder.

Keyed by the decoded pixels, the slicing parameters, the downsample mode and the mmproj file's identity; bounded in
bytes with least-recently-used eviction; optionally mirrored to a directory so that a later process finds them too.
One cache may be shared by threads (a server's conversation slots): lookups and insertions hold its lock.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Encoded:
    """One image, encoded: its slicing grid, piece count, embedding rows of each piece (overview first, then the
    slices row by row: a resampler's query_num each, a 4.6 merger's the piece's patches / 16 or / 4) and the
    embeddings [sum(tokens), E], piece after piece."""

    key: str
    grid: tuple[int, int] | None
    n_pieces: int
    emb: np.ndarray
    tokens: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.tokens) != self.n_pieces or sum(self.tokens) != len(self.emb):
            raise ValueError(f"internal: {self.n_pieces} pieces of {list(self.tokens)} rows do not describe "
                             f"{len(self.emb)} embedding rows")


@dataclass(frozen=True)
class EncodedVideo:
    """A video's sampled frames, encoded, in order: how media.py hands a video to the prompt (prompt.py lays it out
    as its family's VideoLayout says)."""

    frames: tuple[Encoded | PackedFrame, ...]  # a packed group's later frames: PackedFrame


@dataclass(frozen=True)
class PackedFrame:
    """A frame packed into the group of an earlier one (4.5's temporal_ids): it has no placeholder of its own, its
    rows are in the group's encoding (an `Encoded` whose pieces are the group's packed units), which stands where
    the group's first frame is."""


def group_key(frames: list[np.ndarray], time_ids: list[int], max_slice_nums: int, model_id: str) -> str:
    """The cache key of a packed group's encoding: every frame's pixels, the group's time ids, the slicing and the
    mmproj."""
    h = hashlib.sha256()
    h.update(f"packed|{list(time_ids)}|{max_slice_nums}|{model_id}|".encode())
    for rgb in frames:
        h.update(f"{rgb.shape}|".encode())
        h.update(np.ascontiguousarray(rgb).data)
    return h.hexdigest()


def pixels_key(rgb: np.ndarray, max_slice_nums: int, model_id: str, downsample: str | None = None) -> str:
    """The cache key of an image's encoding: its pixels, how it is sliced and reduced (`downsample`: the merger's
    mode, None where the encoder has none) and which mmproj encodes it."""
    h = hashlib.sha256()
    h.update(f"{rgb.shape}|{max_slice_nums}|{model_id}|{downsample or ''}|".encode())
    h.update(np.ascontiguousarray(rgb).data)
    return h.hexdigest()


def file_identity(path: str | os.PathLike[str]) -> str:
    """A model file's identity: its size and the hash of its first and last MiB (header and tail)."""
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with p.open("rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()[:32]


class EmbeddingCache:
    def __init__(self, max_bytes: int = 512 << 20, directory: str | os.PathLike[str] | None = None) -> None:
        self.max_bytes = max_bytes
        self.directory = Path(directory) if directory else None
        if self.directory:
            self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._items: OrderedDict[str, Encoded] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Encoded | None:
        with self._lock:
            return self._get(key)

    def _get(self, key: str) -> Encoded | None:
        item = self._items.get(key)
        if item is None and self.directory:
            item = self._load(key)
            if item is not None:
                self._insert(item)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item

    def put(self, item: Encoded) -> None:
        with self._lock:
            self._insert(item)
        if self.directory:
            self._save(item)

    def _insert(self, item: Encoded) -> None:
        if item.key in self._items:
            self._items.move_to_end(item.key)
            return
        if item.emb.nbytes > self.max_bytes:
            return
        self._items[item.key] = item
        self._bytes += item.emb.nbytes
        while self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.emb.nbytes

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{key}.npz"

    def _save(self, item: Encoded) -> None:
        path = self._path(item.key)
        if path.exists():
            return
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, emb=item.emb, grid=np.array(item.grid or (0, 0)), n_pieces=np.array(item.n_pieces),
                         tokens=np.array(item.tokens, dtype=np.int64))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _load(self, key: str) -> Encoded | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            with np.load(path) as z:
                grid = tuple(int(v) for v in z["grid"])
                return Encoded(key, None if grid == (0, 0) else grid, int(z["n_pieces"]), z["emb"].copy(),
                               tuple(int(v) for v in z["tokens"]))
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # a damaged entry (or one without its piece rows) is dropped, then recomputed
            return None
