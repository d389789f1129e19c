"""Generated tokens -> the text the original returns: the tokenizer's decode (special tokens written out unless
skipped; 2.5's `clean_up_tokenization_spaces`), streamed as whole characters.

The original decodes the whole answer at once; a stream must not emit what a later token would change, so a
character split over several tokens is held back until complete, and (with the space clean-up) a trailing
" ", " '" or " n" waits for the token that decides whether the space goes.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable

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
