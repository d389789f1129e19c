"""A chat's answer and statistics -> OpenAI's chat.completion object or its SSE chunks (the text itself, stop
strings and the whitespace chat() strips, is the text decoder's: text.py)."""

from __future__ import annotations

import json
import secrets
import time


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
