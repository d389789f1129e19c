"""The HTTP routes: OpenAI's `/v1/chat/completions` and `/v1/models`, `/health`, and the chat page at `/`.

Every request that holds a slot gives it back whatever happens: the answer's end, an error, or the client going
away (a disconnect cancels the response; the cleanup runs shielded from that cancellation, closes the chat stream,
which stops generating, and releases the slot). A client that leaves while it waits for a slot leaves the queue.

Bodies are JSON only, read within `body_timeout` seconds and up to `max_body_bytes` (body.py bounds their shape
before they are parsed); parsing and checking run in a worker thread, so a large body never stalls the event loop
(`/health` keeps answering). Who may send requests at all is guard.py's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Receive, Scope, Send

from ..chat_options import chat_params
from ..errors import BusyError, ClosedError
from .answer import chunk, completion, completion_id, timings, usage_chunk
from .body import parse_json
from .errors import APIError
from .guard import Guard
from .request import ChatRequest, answer_fingerprint, parse_chat_request
from .slots import Slot, SlotPool

PAGE = Path(__file__).with_name("static") / "index.html"
DRAIN_FACTOR = 16  # an oversized body is read (and dropped) up to this many times the limit, so the client sees 413
log = logging.getLogger("minicpmv_edge.server")


@dataclass
class ServerConfig:
    model_name: str
    api_key: str | None = None
    local_dir: Path | None = None
    max_body_bytes: int = 64 << 20
    body_timeout: float = 60.0  # seconds for a request body to arrive
    allowed_hosts: list[str] = field(default_factory=list)  # Host names beyond IP addresses and this machine's
    allowed_origins: list[str] = field(default_factory=list)  # web page origins beyond the server's own


def _status(e: BaseException) -> APIError:
    """A runtime exception -> the API error a client should see (the messages of our input errors name request
    parts, not server paths; anything unexpected is logged here and reported without its text)."""
    if isinstance(e, APIError):
        return e
    if isinstance(e, MemoryError):
        return APIError(413, f"too large for this server's memory: {str(e) or 'out of memory'}")
    if isinstance(e, BusyError):
        return APIError(503, str(e))
    if isinstance(e, ClosedError):
        return APIError(503, "the server is shutting down")
    if isinstance(e, (ValueError, TypeError)):  # MessageError, ImageError, VideoError, the context limit
        return APIError(400, str(e) or type(e).__name__)
    log.error("internal error", exc_info=e)
    return APIError(500, f"internal error ({type(e).__name__}); the server's log has the details")


class _Turn:
    """One request's hold on a slot: the chat stream and what it has produced; release() is idempotent."""

    def __init__(self, pool: SlotPool, slot: Slot, req: ChatRequest, stream: Any) -> None:
        self.pool, self.slot, self.req, self.stream = pool, slot, req, stream
        self.done = False
        self._released = False

    async def pieces(self):
        """The answer's text, piece by piece, until it ends (stop strings and stripping are the text decoder's)."""
        while True:
            piece = await anyio.to_thread.run_sync(next, self.stream, None)
            if piece is None:
                break
            yield piece
        self.done = True

    @property
    def finish_reason(self) -> str | None:
        return self.stream.stats.finish_reason

    @property
    def text(self) -> str:
        return self.stream.stats.text

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.stream.close)
        history = [*self.req.fingerprint, answer_fingerprint(self.text)] if self.done else None
        self.pool.release(self.slot, history)


class _ReleasingStream(StreamingResponse):
    """A StreamingResponse that releases its turn even if it is cancelled before its body starts."""

    def __init__(self, content, turn: _Turn) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.turn = turn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.turn.release()


def check_key(request: Request, cfg: ServerConfig) -> None:
    if cfg.api_key is None:
        return
    given = request.headers.get("authorization", "")
    if not secrets.compare_digest(given.encode(), f"Bearer {cfg.api_key}".encode()):
        raise APIError(401, "invalid or missing API key: send the header 'Authorization: Bearer <key>'",
                       code="invalid_api_key")


async def read_json(request: Request, cfg: ServerConfig) -> Any:
    """The body, decoded: JSON only (415 otherwise), within the size limit (413) and the time limit (408)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise APIError(415, f"the request body must be JSON, sent with 'Content-Type: application/json' (got "
                            f"{kind[:60] or 'none'!r})", code="unsupported_media_type")
    limit = cfg.max_body_bytes
    too_large = APIError(413, f"the request body is larger than this server's limit of {limit} bytes "
                              "(--max-body-mb)", code="request_too_large")
    length = request.headers.get("content-length", "")
    big = length.isdigit() and int(length) > limit
    buf, seen = bytearray(), 0
    try:
        with anyio.fail_after(cfg.body_timeout):
            async for part in request.stream():
                seen += len(part)
                if seen > limit:
                    big = True
                    if seen > DRAIN_FACTOR * limit:
                        break
                elif not big:
                    buf += part
    except TimeoutError:
        raise APIError(408, f"the request body did not arrive within {cfg.body_timeout:g} s",
                       code="request_timeout") from None
    if big:
        raise too_large
    return await anyio.to_thread.run_sync(parse_json, bytes(buf))


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body is read by now: the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def wait_for_slot(pool: SlotPool, request: Request, fingerprint: list[str]) -> Slot | None:
    """A slot for this request, or None if the client left while it waited (its queue place is given back)."""
    acquire = asyncio.ensure_future(pool.acquire(fingerprint))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({acquire, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not acquire.done():
            acquire.cancel()  # acquire() leaves the queue, or passes on a slot handed to it meanwhile
            await asyncio.gather(acquire, return_exceptions=True)
    return None if acquire.cancelled() else acquire.result()


async def chat_completions(request: Request) -> Response:
    """POST /v1/chat/completions: OpenAI's chat completion, streamed (SSE) or whole."""
    pool: SlotPool = request.app.state.pool
    cfg: ServerConfig = request.app.state.cfg
    check_key(request, cfg)
    body = await read_json(request, cfg)
    req = await anyio.to_thread.run_sync(parse_chat_request, body, cfg.local_dir)
    slot = await wait_for_slot(pool, request, req.fingerprint)
    if slot is None:
        return Response(status_code=499)
    try:
        gp, pp = chat_params(pool.model.chat_defaults, sampling=True, **req.chat_kwargs, stop=req.stop)
        stream = await anyio.to_thread.run_sync(
            lambda: slot.session.chat(req.turns, gp, pp, stream=True, strip=True))
    except BaseException as e:
        pool.release(slot, None)
        raise _status(e) from e
    turn = _Turn(pool, slot, req, stream)
    if req.stream:
        return _ReleasingStream(_events(turn, cfg.model_name), turn)
    try:
        n = 0
        async for _ in turn.pieces():
            n += 1
            if n % 8 == 0 and await request.is_disconnected():
                return Response(status_code=499)
        return JSONResponse(completion(completion_id(), cfg.model_name, turn.text, turn.finish_reason,
                                       turn.stream.stats))
    finally:
        await turn.release()


def create_app(pool: SlotPool, cfg: ServerConfig) -> FastAPI:
    app = FastAPI(title="minicpmv-edge", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.pool, app.state.cfg = pool, cfg

    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, e: HTTPException) -> JSONResponse:
        err = APIError(e.status_code, str(e.detail))
        return JSONResponse(err.body(), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _internal(_: Request, e: Exception) -> JSONResponse:
        err = _status(e)
        return JSONResponse(err.body(), status_code=err.status)

    @app.get("/health")
    async def health() -> dict:
        n = len(pool.slots)
        return {"status": "ok", "slots_idle": len(pool.free), "slots_processing": n - len(pool.free),
                "queue": pool.waiting}

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        check_key(request, cfg)
        return {"object": "list", "data": [{"id": cfg.model_name, "object": "model", "created": 0,
                                            "owned_by": "minicpmv-edge"}]}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    app.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"])
    if cfg.allowed_origins:  # CORS for the origins the operator allowed (preflights answered, responses readable)
        app.add_middleware(CORSMiddleware, allow_origins=cfg.allowed_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(Guard, allowed_hosts=cfg.allowed_hosts, allowed_origins=cfg.allowed_origins)
    return app


async def _events(turn: _Turn, model: str):
    cid, created = completion_id(), int(time.time())
    yield chunk(cid, model, created, {"role": "assistant", "content": ""})
    try:
        async for text in turn.pieces():
            yield chunk(cid, model, created, {"content": text})
    except Exception as e:  # the status line is sent already: the error goes in the stream, as llama-server does
        yield f"data: {json.dumps(_status(e).body())}\n\n"
        return
    stats = turn.stream.stats
    yield chunk(cid, model, created, {}, turn.finish_reason, timings=timings(stats))
    if turn.req.include_usage:
        yield usage_chunk(cid, model, created, stats)
    yield "data: [DONE]\n\n"
