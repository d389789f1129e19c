"""Conversations as the runtime takes them: the original `chat()` shape (`content` a string, or a list of strings
and images) and OpenAI's content parts (the original `modeling_minicpmv.py` `chat()`).

As in the original, a string is always text. Images are PIL images, uint8 arrays, `Path`s, `Image(...)` or typed
parts (`{"type": "image", "image": ...}`, `{"type": "image_url", "image_url": {"url": ...}}`); videos are `Video(...)`,
`Path`s with a video suffix or `{"type": "video" | "video_url", ...}` parts.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from .image import Image
from .video import Video, is_video_path

ROLES = ("system", "user", "assistant")


class MessageError(ValueError):
    """A conversation the runtime cannot use (bad role, content or image reference)."""


@dataclass
class Turn:
    role: str
    parts: list[str | Image | Video]  # text, images and videos, in order


def part_url(part: dict, kind: str) -> str:
    """The url of an `image_url` / `video_url` part (http(s) refused: nothing is downloaded)."""
    ref = part.get(kind)
    url = ref.get("url") if isinstance(ref, dict) else ref
    if not isinstance(url, str) or not url:
        raise MessageError(f"a {kind!r} part needs a url string")
    if url.startswith(("http://", "https://")):
        raise MessageError(f"{kind} {url[:80]!r}: this runtime does not download; pass a local path or a data: URL")
    return url


def decode_data_url(url: str) -> tuple[str, bytes]:
    """(media type, bytes) of a base64 `data:` URL; MessageError for any other form or invalid base64."""
    head, comma, data = url.partition(",")
    if not comma or ";base64" not in head:
        raise MessageError("only base64 data: URLs are supported (data:<type>;base64,<data>)")
    try:
        return head[5:].split(";")[0].lower(), base64.b64decode(data, validate=True)
    except ValueError as e:  # binascii.Error is a ValueError
        raise MessageError(f"invalid base64 data ({e})") from None


def _image_url(url: str) -> Image:
    if url.startswith("data:"):
        try:
            return Image(decode_data_url(url)[1])
        except MessageError as e:
            raise MessageError(f"image_url: {e}") from None
    return Image(Path(url.removeprefix("file://")))


def library_part(item: Any, where: str) -> str | Image | Video:
    """A content item by the library's rules: the original chat()'s shapes and OpenAI's content parts; local paths
    and base64 data: URLs, nothing downloaded."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        return _typed_part(item, where)
    if isinstance(item, (Image, Video)):
        return item
    if isinstance(item, os.PathLike):
        return Video(item) if is_video_path(item) else Image(item)
    if isinstance(item, (PILImage.Image, np.ndarray, bytes, bytearray)):
        return Image(item)
    raise MessageError(f"{where}: unsupported content item of type {type(item).__name__} (strings are text; "
                       "images are PIL images, arrays, Paths or Image(...); videos are Video(...))")


def _typed_part(part: dict, where: str) -> str | Image | Video:
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise MessageError(f"{where}: a 'text' part needs a 'text' string, not {type(text).__name__}")
        return text
    if kind == "image":
        source = part.get("image")
        if isinstance(source, str):
            return Image(Path(source))
        try:
            return Image(source)
        except TypeError as e:
            raise MessageError(f"{where}: an 'image' part: {e}") from e
    try:
        if kind == "image_url":
            return _image_url(part_url(part, kind))
        if kind in ("video", "video_url"):
            ref = part.get(kind)
            if isinstance(ref, os.PathLike):
                return Video(ref)
            return Video(part_url(part, kind).removeprefix("file://"))
    except MessageError as e:
        raise MessageError(f"{where}: {e}") from None
    raise MessageError(f"{where}: unsupported content part type {kind!r} (use 'text', 'image', 'image_url', "
                       "'video' or 'video_url')")


@dataclass(frozen=True)
class Rules:
    """How messages become turns: the roles a message may name (and what each is), what a message is called in
    errors, and how a content item becomes text, an image or a video. The library's are the default; a server has
    its own (server/request.py)."""

    roles: Mapping[str, str] = field(default_factory=lambda: {r: r for r in ROLES})
    label: str = "message {}"
    part: Callable[[Any, str], str | Image | Video] = library_part


class Conversation(list):
    """The turns of a conversation, as the pipeline hands them on, and how many characters of text they hold."""

    text_chars: int = 0


def _text(s: str, where: str = "text") -> str:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise MessageError(f"{where}: text is not valid Unicode ({e.reason} at position {e.start})") from None
    return s


def _parts(content: Any, where: str, rules: Rules) -> list[str | Image | Video]:
    if isinstance(content, str):
        return [_text(content, where)]
    if not isinstance(content, (list, tuple)):
        raise MessageError(f"{where}: content must be a string or a list, not {type(content).__name__}")
    out = []
    for j, c in enumerate(content):
        p = rules.part(c, f"{where}.content[{j}]")
        out.append(_text(p, f"{where}.content[{j}]") if isinstance(p, str) else p)
    return out


def normalize(msgs: Any, system_prompt: str = "", rules: Rules = Rules()) -> Conversation:
    """The conversation as turns. A `system` message may come first (ours: the original takes only
    `system_prompt=`); both at once are refused, as the original refuses a system message."""
    if not isinstance(msgs, (list, tuple)) or not msgs:
        raise MessageError("msgs must be a non-empty list of {'role', 'content'} messages")
    turns = Conversation()
    for i, m in enumerate(msgs):
        where = rules.label.format(i)
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise MessageError(f"{where} must be a dict with 'role' and 'content'")
        raw = m["role"]
        role = rules.roles.get(raw) if isinstance(raw, str) else None
        if role is None:
            raise MessageError(f"{where}: unknown role {raw!r} (use {', '.join(rules.roles)})")
        if role == "system" and i > 0:
            raise MessageError(f"{where}: a system message can only be the first")
        turns.append(Turn(role, _parts(m["content"], where, rules)))
    if turns[0].role == "system" and system_prompt:
        raise MessageError("a system message and system_prompt= were both given; use one of them")
    if system_prompt:
        turns.insert(0, Turn("system", [_text(system_prompt, "system_prompt")]))
    first = 1 if turns[0].role == "system" else 0
    if len(turns) <= first or turns[first].role != "user":
        raise MessageError("the first message (after the system message) must be from the user")
    if turns[-1].role != "user":
        raise MessageError("the last message must be from the user")
    if turns[0].role == "system" and any(not isinstance(p, str) for p in turns[0].parts):
        raise MessageError("the system message can hold text only")
    turns.text_chars = sum(len(p) for t in turns for p in t.parts if isinstance(p, str))
    return turns
