"""Who holds a session (one chat() call, or one open stream) and the stream of an answer while it is generated."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator

from .errors import BusyError
from .stats import ChatStats


class Gate:
    """Who holds a session: one chat() call, or one open stream (weakly: a dropped stream releases it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.holder: int | None = None  # thread ident
        self._stream: weakref.ref[ChatStream] | None = None

    @property
    def stream(self) -> ChatStream | None:
        ref = self._stream
        return ref() if ref is not None else None

    @stream.setter
    def stream(self, s: ChatStream | None) -> None:
        self._stream = weakref.ref(s) if s is not None else None

    def enter(self) -> None:
        if self.stream is not None and self.holder == threading.get_ident():
            raise BusyError("this thread holds an open stream of this MiniCPMV: read it to the end or close() it "
                            "before the next chat()")
        self._lock.acquire()
        self.holder = threading.get_ident()

    def leave(self) -> None:
        self.holder, self.stream = None, None
        self._lock.release()


class ChatStream:
    """The answer while it is generated: iterate for text pieces (never a split character). It holds its session
    until exhausted, closed or dropped; `stats` fills in as it goes (finish_reason once it ends)."""

    def __init__(self, pieces: Iterator[str], gate: Gate, stats: ChatStats) -> None:
        self._pieces = pieces
        self._gate = gate
        self._lock = threading.RLock()
        self._open = True
        self.stats = stats
        gate.stream = self

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> str:
        with self._lock:
            if not self._open:
                raise StopIteration
            try:
                return next(self._pieces)
            except BaseException:
                self._end()
                raise

    def close(self) -> None:
        """Stop generating now and release the session."""
        with self._lock:
            if self._open:
                try:
                    self._pieces.close()  # type: ignore[attr-defined]
                finally:
                    self._end()

    def _end(self) -> None:
        if self._open:
            self._open = False
            self._gate.leave()

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
