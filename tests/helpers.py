"""Small helpers shared by the test files."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np


def cli() -> str:
    """The installed `minicpmv-edge` entry point, as a user runs it."""
    exe = Path(sysconfig.get_path("scripts")) / "minicpmv-edge"
    assert exe.exists(), exe
    return str(exe)


def smooth_image(h: int = 448, w: int = 448) -> np.ndarray:
    """An RGB uint8 image of gradients and a low-frequency pattern (resampling differences stay small on it)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / (w - 1), yy / (h - 1), 0.5 + 0.5 * np.sin(xx / 40) * np.cos(yy / 55)], -1)
    return (img * 255).round().astype(np.uint8)
