"""Conversation turns -> the exact prompt the original processors build (`processing_minicpmv.py`), as
positions: token ids, and (image, row) pairs where image embedding rows go.

Messages are rendered with the model's own Jinja chat template, each image written as its family's tag and the parts
of a message joined as the family's original does (2.6's chat(): `(<image>./</image>)`, parts joined by "\\n"; 4.6's
template: `<|image_pad|>` + "\\n" per image, parts concatenated), a video as its frames or as a tag of its own
(Family.video_layout). Every image then gets the family's layout (`<image_id>k</image_id>`, overview, slice grid),
each piece's rows (a resampler's query_num, a 4.6 merger's count for that piece) receiving its embeddings.

Tokenization follows the original tokenizer (special tokens split the text; the runs between them are BPE-encoded
whole), with one deliberate difference: text that comes from a message is plain text, so a user who types
`<|im_end|>` or `<image>` cannot fake a role or an image (`parse_special=True` restores the original behaviour).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .cache import EncodedVideo, PackedFrame
from .families import Family
from .messages import MessageError, Turn

_SENTINEL = "\ue000{}\ue001"  # private-use characters: where each message's content goes in the template

Position = int | tuple[int, int]  # a token id, or (image index, embedding row)


class Vocabulary(Protocol):
    specials: dict[str, int]  # strings the tokenizer matches as special tokens (control, user-defined, unknown)

    def tokenize(self, text: str, add_special: bool = False, parse_special: bool = True) -> list[int]: ...


@dataclass(frozen=True)
class Prompt:
    positions: list[Position]
    images: list[Any] = field(default_factory=list)  # the encodings (cache.Encoded) that (image, row) refer to
    # per image: the placeholder token the original processor writes for its rows (<unk>, <|image_pad|>, ...)
    row_tokens: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def image_rows(self) -> int:
        return sum(1 for p in self.positions if isinstance(p, tuple))


def render_template(template: str, messages: list[dict[str, str]], bos_token: str, eos_token: str,
                    extra: Mapping[str, object] | None = None) -> str:
    """The chat template applied as `apply_chat_template(..., add_generation_prompt=True, **extra)` does (`extra`:
    the template's own switches the caller gave, such as `enable_thinking`; nothing the caller did not give)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])

    def raise_exception(message: str) -> None:
        raise MessageError(f"chat template: {message}")

    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(**(extra or {}), messages=messages, add_generation_prompt=True,
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


def _piece_rows(image: Any, query_num: int) -> tuple[int, ...]:
    """The embedding rows of each piece of an encoded image (overview, then slices): its own `tokens`, else
    query_num each (a resampler's)."""
    grid = image.grid
    n = 1 + (grid[0] * grid[1] if grid else 0)
    tokens = tuple(getattr(image, "tokens", ()) or ())
    if not tokens:
        if query_num <= 0:
            raise ValueError("internal: an image without its pieces' token counts, and no query_num")
        tokens = (query_num,) * n
    if len(tokens) != n:
        raise ValueError(f"internal: an image sliced {grid} has {n} pieces, not {len(tokens)}")
    return tokens


def _emit_units(em: _Emitter, v: Family, image: int, grid: tuple[int, int] | None, rows: Sequence[int]) -> None:
    """One image's pieces as the original processor's get_slice_image_placeholder writes them for this family, after
    any image id: the overview, then the slice grid (its rows joined by "\\n"); `rows`: each piece's rows."""
    at = 0

    def piece(k: int) -> None:
        nonlocal at
        em.rows(image, at, rows[k])
        at += rows[k]

    em.special(v.image_open)
    piece(0)
    em.special(v.image_close)
    if grid is None:
        return
    cols, n_rows = grid
    if v.grid_open:
        em.special(v.grid_open)
    for r in range(n_rows):
        if r:
            em.text("\n")
        for c in range(cols):
            em.special(v.slice_open)
            piece(1 + r * cols + c)
            em.special(v.slice_close)
    if v.grid_close:
        em.special(v.grid_close)


def _emit_id(em: _Emitter, index: int) -> None:
    em.special("<image_id>")
    em.text(str(index))
    em.special("</image_id>")


class _Layout:
    """Writes media into the emitter in prompt order: images numbered among the conversation's images, tagged videos
    among its videos; collects the encodings that (image, row) positions refer to."""

    def __init__(self, em: _Emitter, v: Family, query_num: int, use_image_id: bool) -> None:
        self.em, self.v, self.query_num, self.use_image_id = em, v, query_num, use_image_id
        self.images: list[Any] = []
        self.row_tokens: list[str] = []
        self.n_images = self.n_videos = 0

    def _units(self, image: Any, row_token: str) -> None:
        self.images.append(image)
        self.row_tokens.append(row_token)
        _emit_units(self.em, self.v, len(self.images) - 1, image.grid, _piece_rows(image, self.query_num))

    def image(self, image: Any) -> None:
        if isinstance(image, PackedFrame):  # packed into an earlier frame's group: counted, no placeholder
            self.n_images += 1
            return
        if self.use_image_id:
            _emit_id(self.em, self.n_images)
        self.n_images += 1
        self._units(image, self.v.row_token)

    def video(self, video: EncodedVideo) -> None:
        """A video under one tag: one id, then its frames' units with the family's separator between."""
        layout = self.v.video_layout
        if self.use_image_id:
            _emit_id(self.em, self.n_videos)
        self.n_videos += 1
        for i, frame in enumerate(video.frames):
            if isinstance(frame, PackedFrame):  # its rows are in its group's units
                continue
            if i and layout.frame_separator:
                self.em.text(layout.frame_separator)
            self._units(frame, layout.row_token or self.v.row_token)


Span = tuple[int, int, Any]  # (start, end) of a part in its message's content, and its medium (None: text)


def _placed(parts: Sequence[Any], v: Family, parse_special: bool) -> list[tuple[str, Any]]:
    """A family with an `image_marker` (OmniLMM): the message's text parts joined, its images where that text says
    the marker (parse_special=True; one marker per image), else all first, each followed by `image_after`."""
    media = [p for p in parts if not isinstance(p, str)]
    text = v.part_separator.join(p for p in parts if isinstance(p, str))
    if media and parse_special and v.image_marker in text:
        chunks = text.split(v.image_marker)
        if len(chunks) - 1 != len(media):
            raise MessageError(f"the message says {v.image_marker!r} {len(chunks) - 1} time(s) but has "
                               f"{len(media)} image(s): {v.display} puts one image at each")
        out: list[tuple[str, Any]] = [(chunks[0], None)]
        for medium, chunk in zip(media, chunks[1:], strict=True):
            out += [(v.image_tag, medium), (chunk, None)]
        return out
    return [x for m in media for x in ((v.image_tag, m), (v.image_after, None))] + [(text, None)]


def _joined(parts: Sequence[Any], v: Family) -> list[tuple[str, Any]]:
    """The parts in the order given: text as it is, an image as the family's tag then what follows it, a video as
    its tag then what follows, joined by the family's separator."""
    pieces: list[tuple[str, Any]] = []
    for i, p in enumerate(parts):
        if i:
            pieces.append((v.part_separator, None))
        if isinstance(p, str):
            pieces.append((p, None))
        elif isinstance(p, EncodedVideo):
            pieces += [(v.video_layout.tag or "", p), (v.video_layout.after, None)]
        else:
            pieces += [(v.image_tag, p), (v.image_after, None)]
    return pieces


def _content(parts: Sequence[Any], v: Family, parse_special: bool = False) -> tuple[str, list[Span]]:
    """One message's content string and its parts' spans (each medium's tag where it goes): as given (_joined), or
    the images placed as the family's original places them (_placed)."""
    pieces = _placed(parts, v, parse_special) if v.image_marker else _joined(parts, v)
    spans: list[Span] = []
    at = 0
    for s, medium in pieces:
        if s or medium is not None:
            spans.append((at, at + len(s), medium))
            at += len(s)
    return "".join(s for s, _ in pieces), spans


def _contents(turns: Sequence[Turn], v: Family, parse_special: bool = False) -> list[tuple[str, list[Span]]]:
    """Per turn: the content string the template sees and each part's span in it; a video without a tag of its
    own (Family.video_layout) is its frames, each an image part."""
    tagged = v.video_layout.tag is not None
    return [_content([f for p in t.parts for f in (p.frames if isinstance(p, EncodedVideo) and not tagged else [p])],
                     v, parse_special) for t in turns]


def _kept_tail(rendered: str, pos: int, content: str, after: str) -> tuple[int, int, int] | None:
    """A template that keeps only the end of a message's content (4.6's keeps what follows an earlier answer's
    `</think>`), perhaps trimmed: (start in rendered, length, characters dropped from the content's front) of the
    first place where such an end is followed by the template's own text, or None."""
    at = rendered.find(after, pos)
    while at >= 0:
        kept = rendered[pos:at]
        for source in (content, content.rstrip()):
            if source.endswith(kept):
                return pos, len(kept), len(source) - len(kept)
        at = rendered.find(after, at + 1)
    return None


def _locate(rendered: str, skeleton: list[str], contents: list[str]) -> list[tuple[int, int, int]]:
    """Where each message's content ended up in the rendered prompt: (start in rendered, length, characters the
    template dropped from its front). The template's own text (`skeleton`, between the contents) must surround
    them unchanged; a content may have been trimmed (a template may `| trim` it) or cut to its end (_kept_tail)."""
    if not rendered.startswith(skeleton[0]):
        raise MessageError("the chat template renders differently for different message texts")
    pos, out = len(skeleton[0]), []
    for content, after in zip(contents, skeleton[1:], strict=True):
        found = None
        for variant in (content, content.strip(), content.lstrip(), content.rstrip()):
            if rendered.startswith(variant, pos) and rendered.startswith(after, pos + len(variant)):
                dropped = len(content) - len(content.lstrip()) if variant and not content.startswith(variant) else 0
                found = (pos, len(variant), dropped)
                break
        found = found or _kept_tail(rendered, pos, content, after)
        if found is None:
            raise MessageError("the chat template changes message text in a way this runtime cannot follow; "
                               "pass parse_special=True to tokenize the rendered prompt as a whole")
        out.append(found)
        pos = found[0] + found[1] + len(after)
    if pos != len(rendered):
        raise MessageError("the chat template renders differently for different message texts")
    return out


def _render(template: str, turns: Sequence[Turn], v: Family, extra: Mapping[str, object] | None = None,
            parse_special: bool = False) -> tuple[str, list[tuple[int, int, int]], list[tuple[str, list[Span]]]]:
    """(rendered prompt, where each message's content is in it, each content with its parts' spans)."""
    contents = _contents(turns, v, parse_special)
    if any("\ue000" in c or "\ue001" in c for c, _ in contents):
        raise MessageError("message text contains the private-use characters U+E000/U+E001")
    messages = [{"role": t.role, "content": c} for t, (c, _) in zip(turns, contents, strict=True)]
    rendered = render_template(template, messages, v.bos_token, v.eos_token, extra)
    marked = render_template(template, [{"role": t.role, "content": _SENTINEL.format(i)}
                                        for i, t in enumerate(turns)], v.bos_token, v.eos_token, extra)
    skeleton = re.split("\ue000[0-9]+\ue001", marked)
    if len(skeleton) != len(turns) + 1:
        raise MessageError("the chat template does not render every message exactly once")
    return rendered, _locate(rendered, skeleton, [c for c, _ in contents]), contents


@dataclass(frozen=True)
class _Probe:
    """An image for check_template: one unsliced piece."""

    grid: None = None


def check_template(template: str, v: Family) -> None:
    """MessageError if the template cannot render an ordinary one-image question the way build_prompt needs."""
    _render(template, [Turn("user", [_Probe(), "What is in the image?"])], v)  # type: ignore[list-item]


def build_prompt(template: str, turns: Sequence[Turn], v: Family, vocab: Vocabulary, query_num: int,
                 use_image_id: bool, parse_special: bool = False,
                 template_kwargs: Mapping[str, object] | None = None) -> Prompt:
    """The prompt of turns whose image parts are encodings (media.py: each with its slicing `grid` and its pieces'
    `tokens`; query_num rows per piece for one without) and whose videos are EncodedVideo. `template_kwargs`: the
    chat template's switches the caller gave (enable_thinking)."""
    rendered, where, contents = _render(template, turns, v, template_kwargs, parse_special)

    ops: list[tuple[str, Any]] = []  # ("template", text), ("user", text), ("medium", encoding), in prompt order
    cursor = 0
    for (start, length, dropped), (_, spans) in zip(where, contents, strict=True):
        ops.append(("template", rendered[cursor:start]))
        for a, b, medium in spans:
            if medium is not None:
                if b - dropped <= 0:  # in a part the template left out (an earlier answer's think block)
                    continue
                if a - dropped < 0 or b - dropped > length:
                    raise MessageError("the chat template cut into an image's tag")
                ops.append(("medium", medium))
                continue
            a, b = max(a - dropped, 0), min(b - dropped, length)
            if a < b:
                ops.append(("user", rendered[start + a : start + b]))
        cursor = start + length
    ops.append(("template", rendered[cursor:]))
    _strip_before_packed(ops)

    em = _Emitter(vocab)
    layout = _Layout(em, v, query_num, use_image_id)
    user_text = em.template_text if parse_special else em.text
    for kind, item in ops:
        if kind == "medium":
            if isinstance(item, EncodedVideo):
                layout.video(item)
            else:
                layout.image(item)
        else:
            (em.template_text if kind == "template" else user_text)(item)
    em.flush()
    return Prompt(em.out, layout.images, layout.row_tokens)


def _strip_before_packed(ops: list[tuple[str, Any]]) -> None:
    """4.5's processor (fact sheet §5.3): a frame packed into an earlier frame's group has no placeholder, and the
    text between the previous image's tag and its tag is stripped (`.strip()`: the "\n" chat() put between the
    frames goes); in place, over the text ops between the two media (a video without a tag of its own is its
    frames: each frame a medium there)."""
    last = -1  # the index of the previous medium
    for i, (kind, item) in enumerate(ops):
        if kind != "medium":
            continue
        if isinstance(item, PackedFrame):
            chunk = list(range(last + 1, i))
            for order, strip in ((chunk, str.lstrip), (chunk[::-1], str.rstrip)):
                for k in order:
                    text = strip(ops[k][1])
                    ops[k] = (ops[k][0], text)
                    if text:
                        break
        last = i
