"""A chat stream -> OpenAI's chat.completion object or its SSE chunks.

The text sent is what MiniCPMV.chat() returns: leading and trailing whitespace is held back from the stream
(chat() strips it, as the original does), so streamed pieces join to the same string. `stop` strings end the
answer before the first one (finish_reason "stop"); enough text is held back that a stop split over pieces is
never sent in part.
"""

from __future__ import annotations

import json
import secrets
import time


class AnswerStream:
    """Pieces in, text safe to send out; `stopped` once a stop string appeared."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.text = ""
        self.sent = 0
        self.stopped = False

    def push(self, piece: str) -> str:
        if self.stopped:
            return ""
        if not self.text:
            piece = piece.lstrip()
        self.text += piece
        start = max(0, self.sent - self.hold)
        cuts = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        if cuts:
            self.text = self.text[: min(cuts)].rstrip()
            self.stopped = True
            return self.flush()
        safe = min(len(self.text) - self.hold, len(self.text.rstrip()))
        out = self.text[self.sent : max(self.sent, safe)]
        self.sent += len(out)
        return out

    def flush(self) -> str:
        end = len(self.text.rstrip())
        out = self.text[self.sent : end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return out

    @property
    def final(self) -> str:
        return self.text.rstrip()


def completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def timings(stats) -> dict:
    """llama-server's `timings` object (what the chat page shows), plus the vision encoder's share."""
    n = len(stats.tokens)
    return {"prompt_n": stats.prompt_tokens - stats.reused_tokens, "cache_n": stats.reused_tokens,
            "prompt_ms": round(stats.prefill_ms, 3), "predicted_n": n, "predicted_ms": round(stats.decode_ms, 3),
            "predicted_per_second": round(n / max(stats.decode_ms, 1e-9) * 1e3, 3),
            "encode_ms": round(stats.encode_ms, 3), "images": stats.images, "pieces": stats.pieces,
            "pieces_cached": stats.pieces - stats.pieces_encoded, "ttft_ms": round(stats.ttft_ms, 3)}


def completion(cid: str, model: str, text: str, finish: str | None, stats) -> dict:
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": finish}],
            "usage": usage(stats.prompt_tokens, len(stats.tokens)), "timings": timings(stats)}


def chunk(cid: str, model: str, created: int, delta: dict, finish: str | None = None, **extra) -> str:
    body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def usage_chunk(cid: str, model: str, created: int, stats) -> str:
    body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [],
            "usage": usage(stats.prompt_tokens, len(stats.tokens))}
    return f"data: {json.dumps(body)}\n\n"
