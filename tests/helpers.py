"""Small helpers shared by the test files."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from minicpmv_edge.families import FAMILIES

FAMILY_NAMES = list(FAMILIES)  # parity and system tests run for every registered family
BPE_FAMILIES = [n for n, f in FAMILIES.items() if f.tokenizer == "bpe"]
# the families of the resampler layout, whose originals the shared references (reference/llm.py, vision.py,
# pipeline.py: remote code under transformers 4.46 / 4.36) reproduce; 4.6 has its own (test_v4_6*.py), and so has 4.5
# (test_v4_5*.py: its Qwen3 needs transformers >= 4.51, run in a process of its own)
OWN_REFERENCE = ("4.5",)
RESAMPLER_FAMILIES = [n for n, f in FAMILIES.items() if f.layout_converter is None and n not in OWN_REFERENCE]


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


# Runs the command given in argv[2:] and writes its peak resident memory (ru_maxrss of the waited child, MiB) and
# its CPU time (user + system, seconds) to argv[1]. The launcher is a small Python process: a child starts with the
# peak of the process that forks it (Linux counts the forking process's pages), so measuring from inside the test
# process would report pytest's own size.
_LAUNCHER = """
import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
u = resource.getrusage(resource.RUSAGE_CHILDREN)
peak = u.ru_maxrss // (1 << 20) if sys.platform == "darwin" else u.ru_maxrss // 1024
open(sys.argv[1], "w").write(f"{peak} {u.ru_utime + u.ru_stime}")
sys.exit(rc)
"""


def run_costs(args: list[str], timeout: float, **kw) -> tuple[subprocess.CompletedProcess, int, float]:
    """(the finished process, its peak resident memory in MiB, its CPU seconds), measured in a fresh process."""
    with tempfile.NamedTemporaryFile("r", suffix=".peak") as f:
        out = subprocess.run([sys.executable, "-c", _LAUNCHER, f.name, *args], capture_output=True, text=True,
                             timeout=timeout, **kw)
        got = f.read().split()
    return out, int(got[0]) if got else -1, float(got[1]) if got else -1.0


def run_measured(args: list[str], timeout: float, **kw) -> tuple[subprocess.CompletedProcess, int]:
    """(the finished process, its peak resident memory in MiB), measured in a fresh process."""
    out, peak, _ = run_costs(args, timeout, **kw)
    return out, peak


def rss_mb() -> float:
    """This process's resident memory now, in MiB (psutil: Linux, macOS, Windows)."""
    import psutil

    return psutil.Process().memory_info().rss / (1 << 20)


class OpenWatch:
    """Whether any process opens or reads a file while watched (Linux inotify): for files that must stay unread."""

    _IN_ACCESS, _IN_OPEN, _IN_NONBLOCK = 0x1, 0x20, 0o4000

    def __init__(self, path: Path) -> None:
        import ctypes
        import ctypes.util

        self._libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = self._libc.inotify_init1(self._IN_NONBLOCK)
        assert self.fd >= 0, ctypes.get_errno()
        wd = self._libc.inotify_add_watch(self.fd, str(path).encode(), self._IN_ACCESS | self._IN_OPEN)
        assert wd >= 0, ctypes.get_errno()

    def touched(self) -> bool:
        """True if an open or read happened since the watch began."""
        import os

        try:
            return len(os.read(self.fd, 4096)) > 0
        except BlockingIOError:
            return False

    def close(self) -> None:
        import os

        os.close(self.fd)


def prompt_ids(m, msgs: list[dict], parse_special: bool = False, max_slices: int = 9) -> list[int]:
    """The prompt a MiniCPMV `m` builds for `msgs`, with the image rows as <unk> (id 0), as the originals write
    their placeholders."""
    from minicpmv_edge.messages import normalize
    from minicpmv_edge.prompt import build_prompt
    from minicpmv_edge.stats import ChatStats

    w = m.model
    turns = w.media.encode_turns(normalize(msgs), max_slices, ChatStats())
    prompt = build_prompt(w.template, turns, w.family, w.llm, m.encoder.query_num, False, parse_special)
    return [p if isinstance(p, int) else 0 for p in prompt.positions]


def message_images(msgs: list[dict]) -> list[Image.Image]:
    """The PIL images of a conversation's messages, in order (what the references are handed)."""
    return [c for m in msgs if isinstance(m["content"], list) for c in m["content"] if isinstance(c, Image.Image)]
