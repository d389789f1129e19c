"""The text MiniCPM-V 2.0's original returns: transformers' slow Llama tokenizer in legacy mode (transformers
4.36, the version 2.0 pins) decoding the answer's ids, which spaces the runs around added and special tokens in its
own way (a stream gives SentencePiece's plain decode instead)."""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence


def _each_byte_replaced(e: UnicodeError) -> tuple[str, int]:
    """SentencePiece turns every byte of invalid UTF-8 into its own U+FFFD (Python's "replace": one per run)."""
    assert isinstance(e, UnicodeDecodeError)
    return "\ufffd" * (e.end - e.start), e.end


codecs.register_error("minicpmv_edge.sentencepiece", _each_byte_replaced)


def sentencepiece_legacy_text(tokens: list[int], pieces: Sequence[str], kind: Callable[[int], str],
                              dummy_prefix: bool) -> str:
    """The text the slow Llama tokenizer in legacy mode decodes `tokens` to, from the vocabulary's `pieces` ("▁"
    for spaces, "<0xNN>" for byte fallback) and each token's `kind`: "added" (the tokenizer's added tokens, e.g.
    <image>, <ref>: their text, with the runs between them decoded apart and all joined by single spaces), "special"
    (BOS, EOS, UNK: a space goes before the text that precedes one inside a run), "byte" or "normal".
    SentencePiece's decoder drops the "▁" a normaliser with `dummy_prefix` put first (from each run's first piece;
    MiniCPM's real file has none, so its runs keep a leading space); the tokenizer also strips the first token's
    own "▁" beforehand, and a piece that is then no longer in the vocabulary is written as it is, "▁" and all."""
    known = set(pieces)

    def decode(run: list[str]) -> str:
        out = bytearray()
        first = dummy_prefix  # the dummy prefix is looked for on the first non-empty piece
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
