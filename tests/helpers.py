"""Small helpers shared by the test files."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tempfile
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


# Runs the command given in argv[2:] and writes its peak resident memory (ru_maxrss of the waited child) to argv[1].
# The launcher is a small Python process: a child starts with the peak of the process that forks it (Linux counts
# the forking process's pages), so measuring from inside the test process would report pytest's own size.
_LAUNCHER = """
import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
open(sys.argv[1], "w").write(str(peak // (1 << 20) if sys.platform == "darwin" else peak // 1024))
sys.exit(rc)
"""


def run_measured(args: list[str], timeout: float, **kw) -> tuple[subprocess.CompletedProcess, int]:
    """(the finished process, its peak resident memory in MiB), measured in a fresh process."""
    with tempfile.NamedTemporaryFile("r", suffix=".peak") as f:
        out = subprocess.run([sys.executable, "-c", _LAUNCHER, f.name, *args], capture_output=True, text=True,
                             timeout=timeout, **kw)
        peak = f.read().strip()
    return out, int(peak) if peak else -1


def rss_mb() -> float:
    """This process's resident memory now, in MiB (psutil: Linux, macOS, Windows)."""
    import psutil

    return psutil.Process().memory_info().rss / (1 << 20)
