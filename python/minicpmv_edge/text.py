"""Generated tokens -> the text the original returns: the tokenizer's decode (special tokens written out unless
skipped; the `clean_up_tokenization_spaces` of tokenizers that have it), streamed as whole characters.

The original decodes the whole answer at once; a stream must not emit what a later token would change, so a
character split over several tokens is held back until complete, and (with the space clean-up) a trailing
" ", " '" or " n" waits for the token that decides whether the space goes.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence

from .families import Family

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

    def push_text(self, text: str) -> str:
        """Text decoded elsewhere (a byte run), after what the bytes so far decode to."""
        self._raw += self._utf8.decode(b"", final=True) + text
        return self._take(final=False)

    def flush(self) -> str:
        self._raw += self._utf8.decode(b"", final=True)
        return self._take(final=True)


class StopCut:
    """Text pieces in, text safe to show out: ends the text before the first stop string (`stopped`), holding back
    enough that a stop split over pieces is never shown in part; with `strip`, also holds back whitespace at either
    end, so that the pieces join to the stripped text the original chat() returns."""

    def __init__(self, stops: Sequence[str], strip: bool) -> None:
        self.stops = [s for s in stops if s]
        self.strip = strip
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""
        self.sent = 0
        self.stopped = False

    def _end(self) -> int:
        return len(self.text.rstrip()) if self.strip else len(self.text)

    def push(self, piece: str) -> str:
        if self.stopped:
            return ""
        if self.strip and not self.text:
            piece = piece.lstrip()
        self.text += piece
        start = max(0, self.sent - self.hold)
        cuts = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        if cuts:
            self.text = self.text[: min(cuts)]
            self.stopped = True
            return self.flush()
        safe = min(len(self.text) - self.hold, self._end())
        out = self.text[self.sent : max(self.sent, safe)]
        self.sent += len(out)
        return out

    def flush(self) -> str:
        end = self._end()
        out = self.text[self.sent : end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return out


class AnswerText:
    """The generated tokens as the original chat() returns them: a leading BOS dropped; pad tokens dropped where
    the family's original does it; special tokens written (unless skipped). The stream is the tokenizer's plain
    decode, whole characters at a time, ended before the first of `stops` (`stopped`) and, with `strip`, without
    whitespace at either end (a family's plain added tokens always written, as the original's decode keeps them);
    `final` is the original's decode, stripped (the family's own answer_decode where it has
    one: SentencePiece's legacy spacing around special tokens, which a stream could not take back), or the text before
    a stop string."""

    def __init__(self, piece: Callable[[int, bool], bytes], family: Family, specials: dict[str, int],
                 pieces: Sequence[str], skip_special: bool, stops: Sequence[str] = (), strip: bool = False,
                 space_prefix: bool = False) -> None:
        # the family's plain added tokens are text even when special ones are skipped (4.6's <think>, <|fim_pad|>,
        # ...), whatever type llama.cpp gives them (it makes "control-looking" ones control tokens)
        plain = {specials[t] for t in family.plain_tokens if t in specials}
        self._piece = lambda t: piece(t, not skip_special or t in plain)
        self._stream = TextDecoder(self._piece, family.clean_up_spaces)
        self._byte_runs = family.byte_runs and bool(pieces)
        self._run = bytearray()  # the byte-fallback tokens since the last other token (byte_runs)
        self._cut = StopCut(stops, strip)
        # the original decodes generate()'s whole output: where that starts with a dummy BOS (transformers 4.36:
        # Family.penalty_history), its "leading BOS dropped" is the dummy, and a generated BOS stays in the text
        dummy_bos = family.penalty_history[:1] == (family.bos_token,)
        self._bos = None if dummy_bos else specials.get(family.bos_token)
        pad = specials.get(family.pad_token)
        self._drop = {pad} if family.text_drops_pad and pad is not None else set()
        self._special = {specials[t] for t in (family.bos_token, family.eos_token, "<unk>", family.pad_token)
                         if t in specials}
        self._added = {specials[t] for t in family.special_tokens if t in specials}
        self._decode = family.answer_decode if pieces else None
        self._pieces = pieces
        self._space_prefix = space_prefix  # the vocabulary's normaliser adds a dummy prefix (SentencePiece)
        self._skip = skip_special
        self._tokens: list[int] = []
        self._first = True

    @property
    def stopped(self) -> bool:
        """A stop string appeared: the answer ends before it."""
        return self._cut.stopped

    def push(self, token: int) -> str:
        first, self._first = self._first, False
        if (first and token == self._bos) or token in self._drop:
            return ""
        self._tokens.append(token)
        if not self._byte_runs:
            return self._cut.push(self._stream.push(token))
        p = self._pieces[token]
        if len(p) == 6 and p.startswith("<0x") and p.endswith(">"):
            self._run.append(int(p[3:5], 16))
            return ""
        if not self._piece(token):  # a special token skipped: the runs on either side join, as the tokenizer drops it
            return ""
        return self._cut.push(self._end_run() + self._stream.push(token))

    def _end_run(self) -> str:
        """The byte run as one string: its UTF-8 text, or one U+FFFD per byte where it is not UTF-8."""
        if not self._run:
            return ""
        try:
            text = self._run.decode("utf-8")
        except UnicodeDecodeError:
            text = "\ufffd" * len(self._run)
        self._run.clear()
        return self._stream.push_text(text)

    def flush(self) -> str:
        out = self._cut.push(self._end_run() + self._stream.flush())
        return out + self._cut.flush()

    @property
    def final(self) -> str:
        if self._cut.stopped:
            return self._cut.text.strip()
        if self._decode is None:
            return self._stream.text.strip()
        tokens = [t for t in self._tokens if not (self._skip and t in self._special)]
        kind = lambda t: "added" if t in self._added else "special" if t in self._special else "normal"  # noqa: E731
        return self._decode(tokens, self._pieces, kind, self._space_prefix).strip()
