"""Bookkeeping for mapping tables: every source tensor is checked by name and shape and must be used once."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .safetensors_io import CheckpointError, TensorFile


class Source:
    def __init__(self, ckpt: TensorFile) -> None:
        self.ckpt = ckpt
        self.used: set[str] = set()

    def expect(self, name: str, shape: tuple[int, ...]) -> None:
        """The checkpoint has `name` with exactly `shape` (raises naming both otherwise)."""
        if name not in self.ckpt:
            raise CheckpointError(f"{self.ckpt.folder}: missing tensor {name!r} (expected shape {shape})")
        found = self.ckpt.shape(name)
        if found != shape:
            raise CheckpointError(f"{self.ckpt.folder}: tensor {name!r} has shape {found}, expected {shape}")
        self.used.add(name)

    def reader(self, name: str, fn: Callable[[np.ndarray], np.ndarray] | None = None) -> Callable[[], np.ndarray]:
        def read() -> np.ndarray:
            a = self.ckpt.get(name)
            return fn(a) if fn else a
        return read

    def skip(self, names: list[str]) -> None:
        """Tensors the original model holds but never runs (e.g. a dropped last vision layer)."""
        self.used.update(n for n in names if n in self.ckpt)

    def check_all_used(self) -> None:
        extra = sorted(set(self.ckpt.keys()) - self.used)
        if extra:
            raise CheckpointError(
                f"{self.ckpt.folder}: unexpected tensor {extra[0]!r} ({len(extra)} unused in all); "
                "the layout does not match this MiniCPM-V version")
