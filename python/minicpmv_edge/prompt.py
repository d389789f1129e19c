"""Conversation turns -> the exact prompt the original processors build (`processing_minicpmv.py`), as
positions: token ids, and (image, row) pairs where image embedding rows go.

Messages are rendered with the model's own Jinja chat template, each image written as the tag `(<image>./</image>)`
and the parts of a message joined by "\\n" (as `chat()` does). Every image then gets the version's layout
(`<image_id>k</image_id>`, overview, slice grid), whose query_num rows per piece receive the image embeddings.

Tokenization follows the original tokenizer (special tokens split the text; the runs between them are BPE-encoded
whole), with one deliberate difference: text that comes from a message is plain text, so a user who types
`<|im_end|>` or `<image>` cannot fake a role or an image (`parse_special=True` restores the original behaviour).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .families import Family
from .messages import MessageError, Turn

IMAGE_TAG = "(<image>./</image>)"
_SENTINEL = "\ue000{}\ue001"  # private-use characters: where each message's content goes in the template

Position = int | tuple[int, int]  # a token id, or (image index, embedding row)


class Vocabulary(Protocol):
    specials: dict[str, int]  # strings the tokenizer matches as special tokens (control, user-defined, unknown)

    def tokenize(self, text: str, add_special: bool = False, parse_special: bool = True) -> list[int]: ...


@dataclass(frozen=True)
class Prompt:
    positions: list[Position]
    images: list[Any] = field(default_factory=list)  # the encodings (cache.Encoded) that (image, row) refer to

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def image_rows(self) -> int:
        return sum(1 for p in self.positions if isinstance(p, tuple))


def render_template(template: str, messages: list[dict[str, str]], bos_token: str, eos_token: str) -> str:
    """The chat template applied as `apply_chat_template(..., add_generation_prompt=True)` does."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])

    def raise_exception(message: str) -> None:
        raise MessageError(f"chat template: {message}")

    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(messages=messages, add_generation_prompt=True,
                                                bos_token=bos_token, eos_token=eos_token)
    except jinja2.TemplateError as e:
        raise MessageError(f"chat template: {e}") from e


class _Emitter:
    """Positions in order; text is buffered until the next special token or image, then tokenized whole."""

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        self.out: list[Position] = []
        self._buf: list[str] = []
        by_first: dict[str, list[tuple[str, int]]] = {}
        for text, tid in vocab.specials.items():
            if text:
                by_first.setdefault(text[0], []).append((text, tid))
        self._by_first = {c: sorted(v, key=lambda t: -len(t[0])) for c, v in by_first.items()}
        self._first = re.compile("[" + "".join(re.escape(c) for c in self._by_first) + "]") if by_first else None

    def text(self, s: str) -> None:
        self._buf.append(s)

    def special(self, token: str) -> None:
        if token not in self.vocab.specials:
            raise MessageError(f"the vocabulary has no special token {token!r}")
        self.flush()
        self.out.append(self.vocab.specials[token])

    def rows(self, image: int, start: int, n: int) -> None:
        self.flush()
        self.out.extend((image, r) for r in range(start, start + n))

    def template_text(self, s: str) -> None:
        """Text in which special-token strings are special tokens (the longest match at each place)."""
        pos = 0
        for m in self._first.finditer(s) if self._first else ():
            i = m.start()
            if i < pos:
                continue
            for text, tid in self._by_first[s[i]]:
                if s.startswith(text, i):
                    self.text(s[pos:i])
                    self.flush()
                    self.out.append(tid)
                    pos = i + len(text)
                    break
        self.text(s[pos:])

    def flush(self) -> None:
        text = "".join(self._buf)
        self._buf = []
        if text:
            self.out.extend(self.vocab.tokenize(text, add_special=False, parse_special=False))


def _emit_image(em: _Emitter, v: Family, query_num: int, grid: tuple[int, int] | None, index: int,
                use_image_id: bool) -> None:
    """One image as the original processor's get_slice_image_placeholder writes it for this version."""
    if use_image_id:
        em.special("<image_id>")
        em.text(str(index))
        em.special("</image_id>")
    em.special("<image>")
    em.rows(index, 0, query_num)
    em.special("</image>")
    if grid is None:
        return
    cols, rows = grid
    if v.grid_open:
        em.special(v.grid_open)
    for r in range(rows):
        if r:
            em.text("\n")
        for c in range(cols):
            em.special(v.slice_open)
            em.rows(index, (1 + r * cols + c) * query_num, query_num)
            em.special(v.slice_close)
    if v.grid_close:
        em.special(v.grid_close)


def _contents(turns: Sequence[Turn]) -> list[tuple[str, list[tuple[int, int, bool]]]]:
    """Per turn: the content string the template sees, and each part's (start, end, is_image) in it."""
    out = []
    for t in turns:
        spans, text, at = [], [], 0
        for i, p in enumerate(t.parts):
            if i:
                text.append("\n")
                spans.append((at, at + 1, False))
                at += 1
            s = p if isinstance(p, str) else IMAGE_TAG
            text.append(s)
            spans.append((at, at + len(s), not isinstance(p, str)))
            at += len(s)
        out.append(("".join(text), spans))
    return out


def _locate(rendered: str, skeleton: list[str], contents: list[str]) -> list[tuple[int, int, int]]:
    """Where each message's content ended up in the rendered prompt: (start in rendered, length, characters the
    template dropped from its front). The template's own text (`skeleton`, between the contents) must surround
    them unchanged; a content may have been trimmed (a template may `| trim` it)."""
    if not rendered.startswith(skeleton[0]):
        raise MessageError("the chat template renders differently for different message texts")
    pos, out = len(skeleton[0]), []
    for content, after in zip(contents, skeleton[1:], strict=True):
        for variant in (content, content.strip(), content.lstrip(), content.rstrip()):
            if rendered.startswith(variant, pos) and rendered.startswith(after, pos + len(variant)):
                dropped = len(content) - len(content.lstrip()) if variant and not content.startswith(variant) else 0
                out.append((pos, len(variant), dropped))
                pos += len(variant) + len(after)
                break
        else:
            raise MessageError("the chat template changes message text in a way this runtime cannot follow; "
                               "pass parse_special=True to tokenize the rendered prompt as a whole")
    if pos != len(rendered):
        raise MessageError("the chat template renders differently for different message texts")
    return out


def _render(template: str, turns: Sequence[Turn], v: Family
            ) -> tuple[str, list[tuple[int, int, int]], list[tuple[str, list[tuple[int, int, bool]]]]]:
    """(rendered prompt, where each message's content is in it, each content with its parts' spans)."""
    contents = _contents(turns)
    if any("\ue000" in c or "\ue001" in c for c, _ in contents):
        raise MessageError("message text contains the private-use characters U+E000/U+E001")
    messages = [{"role": t.role, "content": c} for t, (c, _) in zip(turns, contents, strict=True)]
    rendered = render_template(template, messages, v.bos_token, v.eos_token)
    marked = render_template(template, [{"role": t.role, "content": _SENTINEL.format(i)}
                                        for i, t in enumerate(turns)], v.bos_token, v.eos_token)
    skeleton = re.split("\ue000[0-9]+\ue001", marked)
    if len(skeleton) != len(turns) + 1:
        raise MessageError("the chat template does not render every message exactly once")
    return rendered, _locate(rendered, skeleton, [c for c, _ in contents]), contents


def check_template(template: str, v: Family) -> None:
    """MessageError if the template cannot render an ordinary one-image question the way build_prompt needs."""
    _render(template, [Turn("user", [IMAGE_TAG, "What is in the image?"])], v)


def build_prompt(template: str, turns: Sequence[Turn], v: Family, vocab: Vocabulary, query_num: int,
                 use_image_id: bool, parse_special: bool = False) -> Prompt:
    """The prompt of turns whose image parts are encodings (media.py: each with its slicing `grid`)."""
    images = [p for t in turns for p in t.parts if not isinstance(p, str)]
    grids = [p.grid for p in images]
    rendered, where, contents = _render(template, turns, v)

    em = _Emitter(vocab)
    user_text = em.template_text if parse_special else em.text
    image = 0
    cursor = 0
    for (start, length, dropped), (_, spans) in zip(where, contents, strict=True):
        em.template_text(rendered[cursor:start])
        for a, b, is_image in spans:
            a, b = max(a - dropped, 0), min(b - dropped, length)
            if a >= b:
                continue
            if is_image:
                _emit_image(em, v, query_num, grids[image], image, use_image_id)
                image += 1
            else:
                user_text(rendered[start + a : start + b])
        cursor = start + length
    em.template_text(rendered[cursor:])
    em.flush()
    return Prompt(em.out, images)
