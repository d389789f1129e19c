"""Which slot a request gets (server/slots.py), with stand-in sessions: the free slot whose conversation shares the
most leading messages, ties to the one idle longest; requests beyond the free slots wait in arrival order; past the
queue's bound, 503; a waiter that leaves gives its place back."""

from __future__ import annotations

import asyncio

import pytest

from minicpmv_edge.server import slots
from minicpmv_edge.server.errors import APIError


class FakeSession:
    def __init__(self, model: object, params: object) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeModel:
    closed = False

    def close(self) -> None:
        self.closed = True


def _pool(monkeypatch, n: int, queue: int) -> slots.SlotPool:
    monkeypatch.setattr(slots, "Session", FakeSession)
    return slots.SlotPool(FakeModel(), object(), n, queue)  # type: ignore[arg-type]


def test_the_slot_holding_the_longest_prefix(monkeypatch) -> None:
    async def go() -> None:
        pool = _pool(monkeypatch, 3, 4)
        a = await pool.acquire(["s", "u1"])
        b = await pool.acquire(["x"])
        pool.release(a, ["s", "u1", "a1"])
        pool.release(b, ["x", "y"])
        got = await pool.acquire(["s", "u1", "a1", "u2"])  # continues a's conversation
        assert got is a
        c = await pool.acquire(["new"])  # no prefix anywhere: the slot idle longest (never used)
        assert c.index == 2
    asyncio.run(go())


def test_waiters_in_order_and_the_bound(monkeypatch) -> None:
    async def go() -> None:
        pool = _pool(monkeypatch, 1, 2)
        held = await pool.acquire([])
        first = asyncio.ensure_future(pool.acquire(["1"]))
        second = asyncio.ensure_future(pool.acquire(["2"]))
        await asyncio.sleep(0)
        assert pool.waiting == 2
        with pytest.raises(APIError, match="the server is busy") as e:
            await pool.acquire(["3"])
        assert e.value.status == 503
        first.cancel()  # a client that left while queued
        await asyncio.sleep(0)
        assert pool.waiting == 1
        pool.release(held, None)
        assert (await second) is held and pool.waiting == 0
    asyncio.run(go())


def test_close_closes_sessions_then_the_model(monkeypatch) -> None:
    pool = _pool(monkeypatch, 2, 1)
    pool.close()
    assert all(s.session.closed for s in pool.slots) and pool.model.closed
