"""An OpenAI chat-completions request body -> the conversation and keywords MiniCPMV.chat() takes.

Follows the OpenAI API reference for `POST /v1/chat/completions` (messages with string or content-part content,
`image_url` parts) and vLLM's `video_url` part for MiniCPM-V, read by the runtime's one message parser
(messages.normalize) with this server's part reader. Images and videos come as base64 `data:` URLs (kept
as bytes: nothing is written to disk); a local path or `file://` URL only under the directory the server was started
with (`--allow-local-files`); http(s) URLs are refused (the runtime never downloads). Every image and video is named
by where the request holds it (`messages[0].content[1]`), so an error message tells the client which part failed
and never a path of the server's.

Sampling defaults are the model's (its generation_config.json where the GGUF carries it, else the original
`chat()`'s: temperature 0.7, top_p 0.8, top_k 100, repetition_penalty 1.05), not OpenAI's temperature 1: a request
that omits them gets what `model.chat()` would give. `temperature` 0 is greedy. vLLM's extra sampling fields `top_k`,
`repetition_penalty` and `min_tokens` are taken too, and two per-request prompt switches: `downsample_mode` ("16x" or
"4x", MiniCPM-V 4.6's image tokens per piece) and `enable_thinking` (the chat template's; also as vLLM's and
llama-server's `chat_template_kwargs: {"enable_thinking": ...}`, its only key taken here); and MiniCPM-V 4.5's
`temporal_ids` (the original chat()'s argument: the request's images are video frames, packed by groups of time ids,
e.g. `[[0, 3, 7], [10, 13, 17]]`), with chat()'s `max_slice_nums` and `use_image_id` (the model card's video call
sets 1 and false).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..chat_options import DOWNSAMPLE_MODES, check_temporal_ids
from ..image import Image
from ..messages import MessageError, Rules, Turn, decode_data_url, normalize, part_url
from ..video import Video
from .errors import APIError

MAX_STOPS = 4  # as OpenAI
MAX_TIME_IDS = 1 << 16  # 4.5's temporal_ids: far more frames than any request body can carry


def _bad(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, param=param)


@dataclass
class ChatRequest:
    """What one request asks for, checked: the conversation as turns and chat()'s keywords."""

    turns: list[Turn]
    stream: bool = False
    include_usage: bool = False
    stop: list[str] = field(default_factory=list)
    chat_kwargs: dict[str, Any] = field(default_factory=dict)
    fingerprint: list[str] = field(default_factory=list)  # one hash per message: which slot has its prefix


def _number(body: dict, name: str, lo: float, hi: float, integer: bool = False) -> float | int | None:
    v = body.get(name)
    if v is None:
        return None
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok:
        raise _bad(f"'{name}' must be {'an integer' if integer else 'a number'}, not {json.dumps(v)[:40]}", name)
    if not lo <= v <= hi:
        raise _bad(f"'{name}' must be between {lo} and {hi}, got {v}", name)
    return v


ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class ServerParts:
    """This server's content parts: OpenAI's (`text`, `image_url`, `video_url`); media as base64 data: URLs, or
    files under the directory the server was started with; every image and video named by where the request holds
    it."""

    def __init__(self, local_dir: Path | None) -> None:
        self.local_dir = local_dir.resolve() if local_dir else None

    def local(self, url: str, where: str) -> Path:
        if self.local_dir is None:
            raise MessageError(f"{where}: local files are not allowed by this server (start it with "
                               "--allow-local-files DIR); send the data as a base64 data: URL")
        path = Path(url.removeprefix("file://")).expanduser()
        if not path.is_absolute():
            path = self.local_dir / path
        path = path.resolve()
        if not path.is_relative_to(self.local_dir):
            raise MessageError(f"{where}: {url[:200]!r} is outside the directory this server may read")
        if not path.is_file():
            raise MessageError(f"{where}: no such file {url[:200]!r}")
        return path

    def media(self, part: dict, kind: str, where: str) -> Path | bytes:
        try:
            url = part_url(part, kind)
            return decode_data_url(url)[1] if url.startswith("data:") else self.local(url, where)
        except MessageError as e:
            raise MessageError(e if str(e).startswith(where) else f"{where}: {e}") from None

    def read(self, item: Any, where: str) -> str | Image | Video:
        if not isinstance(item, dict):
            raise MessageError(f"{where}: a content part must be an object, not {type(item).__name__}")
        kind = item.get("type")
        if kind == "text":
            text = item.get("text")
            if not isinstance(text, str):
                raise MessageError(f"{where}: a 'text' part needs a 'text' string")
            return text
        if kind == "image_url":
            return Image(self.media(item, kind, where), name=where)
        if kind == "video_url":
            return Video(self.media(item, kind, where), name=where)
        raise MessageError(f"{where}: unsupported content part type {kind!r} (this server takes 'text', 'image_url' "
                           "and 'video_url')")


def fingerprint(turn: Turn) -> str:
    """A message's identity, for finding the slot whose KV cache holds a conversation's prefix."""
    h = hashlib.sha256(turn.role.encode())
    for p in turn.parts:
        if isinstance(p, str):
            h.update(b"t" + p.encode("utf-8", "surrogatepass"))
        else:
            src = p.source
            h.update((b"i" if isinstance(p, Image) else b"v") + hashlib.sha256(
                src if isinstance(src, bytes) else str(src).encode("utf-8", "surrogatepass")).digest())
    return h.hexdigest()


def answer_fingerprint(text: str) -> str:
    """The fingerprint of an assistant message holding `text`."""
    return fingerprint(Turn("assistant", [text]))


def parse_chat_request(body: Any, local_dir: Path | None) -> ChatRequest:
    """Check a decoded JSON body; APIError(400) names the first problem."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    req = ChatRequest(turns=[])
    _fill(req, body, local_dir)
    return req


def _prompt_switches(body: dict) -> dict[str, Any]:
    """`downsample_mode`, `enable_thinking` (directly or in `chat_template_kwargs`), `max_slice_nums`, `use_image_id`
    and `temporal_ids`, checked; only those given."""
    kw: dict[str, Any] = {}
    mode = body.get("downsample_mode")
    if mode is not None:
        if not isinstance(mode, str) or mode not in DOWNSAMPLE_MODES:
            raise _bad(f"'downsample_mode' must be one of {', '.join(map(repr, DOWNSAMPLE_MODES))}, not "
                       f"{json.dumps(mode)[:40]}", "downsample_mode")
        kw["downsample_mode"] = mode
    extra = body.get("chat_template_kwargs")
    if extra is not None:
        if not isinstance(extra, dict):
            raise _bad("'chat_template_kwargs' must be an object", "chat_template_kwargs")
        unknown = sorted(k for k in extra if k != "enable_thinking")
        if unknown:
            raise _bad(f"'chat_template_kwargs' may hold 'enable_thinking' only, not {unknown[0][:40]!r}",
                       "chat_template_kwargs")
    given = (("enable_thinking", body.get("enable_thinking")),
             ("chat_template_kwargs.enable_thinking", (extra or {}).get("enable_thinking")))
    thinking = [(name, v) for name, v in given if v is not None]
    for name, v in thinking:
        if not isinstance(v, bool):
            raise _bad(f"'{name}' must be true or false", name)
    if len({v for _, v in thinking}) > 1:
        raise _bad("'enable_thinking' and 'chat_template_kwargs.enable_thinking' disagree", "enable_thinking")
    if thinking:
        kw["enable_thinking"] = thinking[0][1]
    slices = _number(body, "max_slice_nums", 1, 1 << 10, integer=True)
    if slices is not None:
        kw["max_slice_nums"] = int(slices)
    image_id = body.get("use_image_id")
    if image_id is not None:
        if not isinstance(image_id, bool):
            raise _bad("'use_image_id' must be true or false", "use_image_id")
        kw["use_image_id"] = image_id
    ids = body.get("temporal_ids")
    if ids is not None:
        if isinstance(ids, list) and sum(len(g) if isinstance(g, list) else 1 for g in ids) > MAX_TIME_IDS:
            raise _bad(f"'temporal_ids' holds more than {MAX_TIME_IDS} time ids", "temporal_ids")
        try:
            kw["temporal_ids"] = check_temporal_ids(ids)
        except (TypeError, ValueError) as e:
            raise _bad(f"'temporal_ids': {str(e)[:300]}", "temporal_ids") from None
    return kw


def _fill(req: ChatRequest, body: dict, local_dir: Path | None) -> None:
    n = _number(body, "n", 1, 128, integer=True)
    if n is not None and n != 1:
        raise _bad("'n' > 1 is not supported: this server returns one choice per request", "n")
    for name in ("stream", "logprobs"):
        if name in body and body[name] is not None and not isinstance(body[name], bool):
            raise _bad(f"'{name}' must be true or false", name)
    if body.get("logprobs"):
        raise _bad("'logprobs' is not supported", "logprobs")
    if body.get("tools") or body.get("functions"):
        raise _bad("tools and function calling are not supported", "tools")
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise _bad("only response_format {'type': 'text'} is supported", "response_format")
    req.stream = bool(body.get("stream"))
    opts = body.get("stream_options")
    if opts is not None:
        if not isinstance(opts, dict):
            raise _bad("'stream_options' must be an object", "stream_options")
        req.include_usage = bool(opts.get("include_usage"))
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop)
                             or len(stop) > MAX_STOPS):
        raise _bad(f"'stop' must be a non-empty string or an array of up to {MAX_STOPS} of them", "stop")
    req.stop = list(stop or [])
    kw: dict[str, Any] = {}
    for name, lo, hi in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0), ("repetition_penalty", 0.01, 10.0)):
        v = _number(body, name, lo, hi)
        if v is not None:
            kw[name] = float(v)
    top_k = _number(body, "top_k", -1, 1 << 20, integer=True)
    if top_k is not None:
        kw["top_k"] = max(0, int(top_k))
    seed = _number(body, "seed", -(1 << 63), (1 << 64) - 1, integer=True)
    if seed is not None:
        kw["seed"] = int(seed) & 0xFFFFFFFF
    limits = [_number(body, k, 1, 1 << 31, integer=True) for k in ("max_completion_tokens", "max_tokens")]
    given = next((int(v) for v in limits if v is not None), None)
    if given is not None:  # otherwise the model's own default (chat()); the context's end stops it either way
        kw["max_new_tokens"] = given
    low = _number(body, "min_tokens", 0, 1 << 31, integer=True)  # vLLM's extension
    if low:
        kw["min_new_tokens"] = int(low)
    kw.update(_prompt_switches(body))
    req.chat_kwargs = kw
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty array", "messages")
    try:
        req.turns = normalize(messages, rules=Rules(ROLES, "messages[{}]", ServerParts(local_dir).read))
    except MessageError as e:
        raise _bad(str(e), "messages") from None
    req.fingerprint = [fingerprint(t) for t in req.turns]
