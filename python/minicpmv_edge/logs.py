"""llama.cpp's and ggml's log lines, in Python `logging`: the `minicpmv_edge.llama` logger.

llama.cpp has one logger for the whole process (`llama_log_set` also sets ggml's), so this bridge is installed once
and serves every model and encoder. The package logger `minicpmv_edge` has a NullHandler: quiet unless the
application configures logging or asks for `verbose`. The last error lines are kept, so that a failed load can
say why.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
from collections import deque

import llama_cpp as L

logging.getLogger("minicpmv_edge").addHandler(logging.NullHandler())
log = logging.getLogger("minicpmv_edge.llama")

# enum ggml_log_level (ggml.h): NONE, DEBUG, INFO, WARN, ERROR, CONT (continues the previous message)
_LEVELS = {0: logging.INFO, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_CONT = 5


class _Bridge:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._level = logging.INFO
        self._line = ""
        self.errors: deque[tuple[int, str]] = deque(maxlen=64)  # (serial, line) of recent warnings and errors
        self.serial = 0

    def __call__(self, level: int, text: bytes | None, user_data: object) -> None:
        try:
            with self._lock:
                if level != _CONT:
                    self._level = _LEVELS.get(level, logging.INFO)
                self._line += (text or b"").decode("utf-8", errors="replace")
                if not self._line.endswith("\n"):
                    return
                line, self._line = self._line.rstrip("\n"), ""
                lvl = self._level
                if lvl >= logging.WARNING:
                    self.serial += 1
                    self.errors.append((self.serial, line))
            if log.isEnabledFor(lvl):
                log.log(lvl, "%s", line)
        except Exception:  # never let an exception escape into C
            pass

    def since(self, serial: int) -> list[str]:
        with self._lock:
            return [line for s, line in self.errors if s > serial]


_bridge = _Bridge()
_callback = L.llama_log_callback(_bridge)  # kept alive for the life of the process
_installed = False
_install_lock = threading.Lock()


def install() -> _Bridge:
    """Route llama.cpp's and ggml's logs to `logging` (idempotent)."""
    global _installed
    with _install_lock:
        if not _installed:
            L.llama_log_set(_callback, ctypes.c_void_p(0))
            _installed = True
    return _bridge


def set_verbose(verbose: bool) -> None:
    """Show the runtime's and llama.cpp's log lines on stderr (once a handler is attached, it stays)."""
    pkg = logging.getLogger("minicpmv_edge")
    if verbose:
        if not any(getattr(h, "_minicpmv_edge", False) for h in pkg.handlers):
            h = logging.StreamHandler(sys.stderr)
            h.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            h._minicpmv_edge = True  # type: ignore[attr-defined]
            pkg.addHandler(h)
        pkg.setLevel(logging.DEBUG)
