"""uvicorn's HTTP/1.1 protocol with a deadline for every request's headers.

uvicorn closes a kept-alive connection that stays idle after a response, but a connection that never completes a
request (opened and left idle, or headers sent a byte at a time) is held forever: any data resets its keep-alive
timer, and there is none before the first request. Here each connection must complete a request's headers within
`header_timeout` seconds of opening, and the next one's within as long of the previous response's end; otherwise it
is closed. The body is the application's to time (app.read_json).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol


class _TimedH11Protocol(H11Protocol):
    header_timeout = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def _arm(self, cycle: object) -> None:
        """Close the connection unless a request newer than `cycle` starts within header_timeout."""
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._expire, cycle)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, cycle: object) -> None:
        if self.cycle is cycle and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(None)

    def on_response_complete(self) -> None:
        done = self.cycle  # (a pipelined request may start inside the call below: it is newer than this one)
        super().on_response_complete()
        self._arm(done)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def timed_protocol(header_timeout: float) -> type[H11Protocol]:
    """The protocol class for uvicorn.Config(http=...), with this deadline."""
    return type("TimedH11Protocol", (_TimedH11Protocol,), {"header_timeout": float(header_timeout)})
