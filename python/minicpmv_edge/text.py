"""Generated tokens -> the text the original returns: the tokenizer's decode (special tokens written out unless
skipped; 2.5's `clean_up_tokenization_spaces`), streamed as whole characters.

The original decodes the whole answer at once; a stream must not emit what a later token would change, so a
character split over several tokens is held back until complete, and (with the space clean-up) a trailing
" ", " '" or " n" waits for the token that decides whether the space goes.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence

from .versions import ModelVersion

# transformers' clean_up_tokenization (applied in this order): a space before these goes away
_CLEANUPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
             (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def clean_up_spaces(text: str) -> str:
    for a, b in _CLEANUPS:
        text = text.replace(a, b)
    return text


def _held_back(text: str) -> int:
    """How many trailing characters a following token could still change through the clean-up."""
    i = text.rfind(" ")
    if i < 0:
        return 0
    tail = text[i:]
    return len(tail) if any(a.startswith(tail) and len(tail) < len(a) for a, _ in _CLEANUPS) else 0


class TextDecoder:
    """push(token) -> the newly settled text; flush() -> the rest. Bytes that can never be UTF-8 become U+FFFD."""

    def __init__(self, piece: Callable[[int], bytes], clean_spaces: bool) -> None:
        self._piece = piece
        self._clean = clean_spaces
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._raw = ""
        self._sent = 0

    @property
    def text(self) -> str:
        return clean_up_spaces(self._raw) if self._clean else self._raw

    def _take(self, final: bool) -> str:
        full = self.text
        end = len(full) if final or not self._clean else len(full) - _held_back(full)
        out = full[self._sent : end]
        self._sent = max(self._sent, end)
        return out

    def push(self, token: int) -> str:
        self._raw += self._utf8.decode(self._piece(token))
        return self._take(final=False)

    def flush(self) -> str:
        self._raw += self._utf8.decode(b"", final=True)
        return self._take(final=True)


def _each_byte_replaced(e: UnicodeError) -> tuple[str, int]:
    """SentencePiece turns every byte of invalid UTF-8 into its own U+FFFD (Python's "replace": one per run)."""
    assert isinstance(e, UnicodeDecodeError)
    return "\ufffd" * (e.end - e.start), e.end


codecs.register_error("minicpmv_edge.sentencepiece", _each_byte_replaced)


def sentencepiece_legacy_text(tokens: list[int], pieces: Sequence[str], kind: Callable[[int], str]) -> str:
    """The text transformers' slow Llama tokenizer in legacy mode (MiniCPM-V 2.0's, transformers 4.36) decodes
    `tokens` to, from the vocabulary's `pieces` ("▁" for spaces, "<0xNN>" for byte fallback) and each token's
    `kind`: "added" (the tokenizer's added tokens, e.g. <image>, <ref>: their text, with the runs between them
    decoded apart and all joined by single spaces), "special" (BOS, EOS, UNK: a space goes before the text that
    precedes one inside a run), "byte" or "normal". SentencePiece's decoder drops the dummy-prefix "▁" of each
    run's first piece; the tokenizer also strips the first token's own "▁" beforehand, and a piece that is then no
    longer in the vocabulary is written as it is, "▁" and all."""
    known = set(pieces)

    def decode(run: list[str]) -> str:
        out = bytearray()
        first = True  # the dummy prefix is looked for on the first non-empty piece
        for p in run:
            if p not in known:  # SentencePiece writes an unknown piece literally
                out += p.encode()
            elif len(p) == 6 and p.startswith("<0x") and p.endswith(">"):
                out.append(int(p[3:5], 16))
            else:
                out += (p[1:] if first and p.startswith("▁") else p).replace("▁", " ").encode()
            first = first and not p
        return out.decode("utf-8", errors="minicpmv_edge.sentencepiece")

    def convert(run: list[int]) -> str:
        out, cur, prev_special = "", [], False
        for i, t in enumerate(run):
            if kind(t) == "special":
                if not prev_special and i != 0:
                    out += " "
                out += decode(cur) + pieces[t]
                prev_special, cur = True, []
            else:
                cur.append(pieces[t][1:] if i == 0 and pieces[t].startswith("▁") else pieces[t])
                prev_special = False
        return out + decode(cur)

    parts: list[str] = []
    run: list[int] = []
    for t in tokens:
        if kind(t) == "added":
            if run and (s := convert(run)):
                parts.append(s)
            run = []
            parts.append(pieces[t])
        else:
            run.append(t)
    if run:
        parts.append(convert(run))
    return " ".join(parts)


class AnswerText:
    """The generated tokens as the original chat() returns them: a leading BOS dropped; pad tokens dropped where
    the version's original does it; special tokens written (unless skipped). The stream is the tokenizer's plain
    decode, whole characters at a time; `final` is the original's decode, stripped (for a SentencePiece
    vocabulary, the legacy spacing around special tokens, which a stream could not take back)."""

    def __init__(self, piece: Callable[[int, bool], bytes], version: ModelVersion, specials: dict[str, int],
                 pieces: Sequence[str], skip_special: bool) -> None:
        self._stream = TextDecoder(lambda t: piece(t, not skip_special), version.clean_up_spaces)
        self._bos = specials.get(version.bos_token)
        pad = specials.get(version.pad_token)
        self._drop = {pad} if version.text_drops_pad and pad is not None else set()
        self._special = {specials[t] for t in (version.bos_token, version.eos_token, "<unk>", version.pad_token)
                         if t in specials}
        self._added = {specials[t] for t in version.special_tokens if t in specials}
        self._legacy = version.tokenizer == "spm" and bool(pieces)
        self._pieces = pieces
        self._skip = skip_special
        self._tokens: list[int] = []
        self._first = True

    def push(self, token: int) -> str:
        first, self._first = self._first, False
        if (first and token == self._bos) or token in self._drop:
            return ""
        self._tokens.append(token)
        return self._stream.push(token)

    def flush(self) -> str:
        return self._stream.flush()

    @property
    def final(self) -> str:
        if not self._legacy:
            return self._stream.text.strip()
        tokens = [t for t in self._tokens if not (self._skip and t in self._special)]
        kind = lambda t: "added" if t in self._added else "special" if t in self._special else "normal"  # noqa: E731
        return sentencepiece_legacy_text(tokens, self._pieces, kind).strip()
