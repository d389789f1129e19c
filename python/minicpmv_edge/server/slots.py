"""Conversation slots: N sessions (each its own llama.cpp context) on one loaded model, handed to requests one at a
time, with a bounded queue.

A slot keeps the KV cache of the last conversation it served, so a request is given the free slot whose last
conversation shares the most leading messages with it (a chat sent again with one more turn prefills only the new
turn, as llama-server's per-slot prefix match); ties go to the slot idle longest. Requests beyond the free slots
wait in arrival order; more than `max_queue` waiting is refused (BusyError -> 503).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import dataclass, field

from ..llama_adapter import ContextParams
from ..model import Model
from ..session import Session
from .errors import APIError


@dataclass
class Slot:
    index: int
    session: Session
    history: list[str] = field(default_factory=list)  # message fingerprints of the conversation it holds
    used: int = 0  # when it was last handed out (a counter)


def _common(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class SlotPool:
    def __init__(self, model: Model, params: ContextParams, parallel: int, max_queue: int) -> None:
        self.model = model
        self.slots: list[Slot] = []
        try:
            for i in range(parallel):
                self.slots.append(Slot(i, Session(model, params)))
        except BaseException:
            self.close()
            raise
        self.free = list(self.slots)
        self.max_queue = max_queue
        self._waiters: deque[asyncio.Future[Slot]] = deque()
        self._clock = itertools.count(1)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _pick(self, fingerprint: list[str]) -> Slot:
        best = max(self.free, key=lambda s: (_common(s.history, fingerprint), -s.used))
        self.free.remove(best)
        best.used = next(self._clock)
        return best

    async def acquire(self, fingerprint: list[str]) -> Slot:
        """A free slot (the best for this conversation), waiting in line if none is free."""
        if self.free and not self._waiters:
            return self._pick(fingerprint)
        if len(self._waiters) >= self.max_queue:
            raise APIError(503, f"the server is busy: {len(self.slots)} conversations running and {self.max_queue} "
                                "waiting; retry later", code="server_busy")
        fut: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            return await fut
        except BaseException:
            if fut in self._waiters:
                self._waiters.remove(fut)
            elif fut.done() and not fut.cancelled():
                self.release(fut.result(), None)  # handed over as we were cancelled: pass it on
            raise

    def release(self, slot: Slot, history: list[str] | None) -> None:
        """Give a slot back; `history`: the conversation now in its KV cache (None: unknown, matches nothing)."""
        slot.history = history or []
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                slot.used = next(self._clock)
                fut.set_result(slot)
                return
        self.free.append(slot)

    def close(self) -> None:
        """The sessions, then the model they share."""
        for s in self.slots:
            s.session.close()
        self.model.close()
