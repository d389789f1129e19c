"""Conversations -> the exact prompt the original processors build (shared/spec/hf-reference.md §8).

Messages are rendered with the model's own Jinja chat template, each image first written as the tag
`(<image>./</image>)` and the parts of a message joined by "\\n" (as `chat()` does); each tag then becomes the
version's placeholder, whose `<unk>` runs receive the image embeddings.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from jinja2.sandbox import ImmutableSandboxedEnvironment
from PIL import Image

from .image import ImageInput
from .versions import ModelVersion
from .video import Video, is_video_path

IMAGE_TAG = "(<image>./</image>)"
UNK = "<unk>"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class MessageError(ValueError):
    """A conversation the runtime cannot use (bad role, content or image reference)."""


@dataclass
class Turn:
    role: str
    parts: list[str | ImageInput]  # text and images, in order


def _is_image_path(s: str) -> bool:
    return Path(s).suffix.lower() in IMAGE_SUFFIXES and os.path.isfile(s)


def _image_url(url: str) -> ImageInput:
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        if ";base64" not in head:
            raise MessageError("image_url: only base64 data: URLs are supported")
        try:
            return base64.b64decode(data, validate=True)
        except ValueError as e:
            raise MessageError(f"image_url: invalid base64 data ({e})") from e
    if url.startswith("file://"):
        return Path(url[len("file://"):])
    if url.startswith(("http://", "https://")):
        raise MessageError(f"image_url {url!r}: this runtime does not download; pass a local path or a data: URL")
    return Path(url)


def _parts(content: Any) -> list[str | ImageInput]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, (list, tuple)):
        raise MessageError(f"message content must be a string or a list, not {type(content).__name__}")
    out: list[str | ImageInput] = []
    for c in content:
        if isinstance(c, dict):  # OpenAI shape
            kind = c.get("type")
            if kind == "text":
                out.append(str(c.get("text", "")))
            elif kind in ("video", "video_url"):
                ref = c.get(kind)
                url = ref.get("url") if isinstance(ref, dict) else ref
                if not isinstance(url, str):
                    raise MessageError(f"{kind} part without a path")
                out.append(Video(url[len("file://"):] if url.startswith("file://") else url))
            elif kind == "image_url":
                ref = c.get("image_url")
                url = ref.get("url") if isinstance(ref, dict) else ref
                if not isinstance(url, str):
                    raise MessageError("image_url part without a url")
                out.append(_image_url(url))
            else:
                raise MessageError(f"unsupported content part type {kind!r} (use 'text' or 'image_url')")
        elif isinstance(c, Video):
            out.append(c)
        elif is_video_path(c) and (isinstance(c, os.PathLike) or os.path.isfile(c)):
            out.append(Video(c))
        elif isinstance(c, str):
            out.append(c if not _is_image_path(c) else Path(c))
        elif isinstance(c, (Image.Image, np.ndarray, bytes, bytearray, os.PathLike)):
            out.append(c)
        else:
            raise MessageError(f"unsupported content item of type {type(c).__name__}")
    return out


def normalize(msgs: list[dict], system_prompt: str = "") -> list[Turn]:
    """Original (`content` = str or list of images and strings) and OpenAI (`content` parts) shapes alike."""
    if not isinstance(msgs, list) or not msgs:
        raise MessageError("msgs must be a non-empty list of {'role', 'content'} messages")
    turns = [Turn("system", [system_prompt])] if system_prompt else []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise MessageError(f"message {i} must have 'role' and 'content'")
        if m["role"] not in ("system", "user", "assistant"):
            raise MessageError(f"message {i}: unknown role {m['role']!r}")
        turns.append(Turn(m["role"], _parts(m["content"])))
    if turns[-1].role != "user":
        raise MessageError("the last message must be from the user")
    return turns


def render_template(template: str, turns: list[Turn], bos_token: str, eos_token: str) -> str:
    """The chat template applied as `apply_chat_template(..., add_generation_prompt=True)` does."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])

    def raise_exception(message: str) -> None:
        raise MessageError(f"chat template: {message}")

    env.globals["raise_exception"] = raise_exception
    messages = [{"role": t.role, "content": "\n".join(p if isinstance(p, str) else IMAGE_TAG for p in t.parts)}
                for t in turns]
    try:
        return env.from_string(template).render(messages=messages, add_generation_prompt=True,
                                                bos_token=bos_token, eos_token=eos_token)
    except jinja2.TemplateError as e:
        raise MessageError(f"chat template: {e}") from e


def image_placeholder(v: ModelVersion, query_num: int, grid: tuple[int, int] | None, index: int,
                      use_image_id: bool) -> str:
    """One image's text: as the original processor's get_slice_image_placeholder for this version."""
    piece = UNK * query_num
    out = f"<image_id>{index}</image_id>" if use_image_id else ""
    out += f"<image>{piece}</image>"
    if grid is not None:
        cols, rows = grid
        row = (v.slice_open + piece + v.slice_close) * cols
        out += v.grid_open + "\n".join([row] * rows) + v.grid_close
    return out


def expand(text: str, placeholders: list[str]) -> str:
    """Replace the image tags of the rendered template, in order, by their placeholders."""
    chunks = text.split(IMAGE_TAG)
    if len(chunks) - 1 != len(placeholders):
        raise MessageError(f"the prompt has {len(chunks) - 1} image tags for {len(placeholders)} images "
                           f"(does a message contain the literal text {IMAGE_TAG!r}?)")
    out = chunks[0]
    for ph, rest in zip(placeholders, chunks[1:], strict=True):
        out += ph + rest
    return out
