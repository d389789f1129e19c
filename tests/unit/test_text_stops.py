"""Tokens -> text and stop strings (text.py), over a vocabulary of literal pieces: a stop string ends the text
before it, however the pieces split it, and is never shown in part; with `strip` the pieces join to the stripped
text chat() returns; a character split over tokens is never shown in part."""

from __future__ import annotations

import pytest

from minicpmv_edge.families import FAMILIES
from minicpmv_edge.text import AnswerText, StopCut, TextDecoder


def _cut(pieces: list[str], stops: list[str], strip: bool) -> tuple[list[str], StopCut]:
    c = StopCut(stops, strip)
    out = [c.push(p) for p in pieces] + [c.flush()]
    return out, c


@pytest.mark.parametrize("split", [1, 2, 3, 5])
def test_a_stop_split_over_pieces_ends_the_text(split: int) -> None:
    text = "Two shapes: a red circle. END of it"
    pieces = [text[i : i + split] for i in range(0, len(text), split)]
    out, c = _cut(pieces, ["END", "never"], strip=False)
    shown = "".join(out)
    assert c.stopped and shown == "Two shapes: a red circle. " and "E" not in shown
    for j in range(len(out)):  # never a part of the stop on show, whatever was shown so far
        assert not "".join(out[: j + 1]).endswith(("E", "EN"))


def test_strip_joins_to_the_stripped_text() -> None:
    pieces = ["  ", "\n", "Hello", " ", " world", "  ", "\n"]
    out, c = _cut(pieces, [], strip=True)
    assert "".join(out) == "Hello  world" and not c.stopped
    out, c = _cut(["  Hi ", "there STOP", "more"], ["STOP"], strip=True)
    assert "".join(out) == "Hi there" and c.stopped


def test_no_stops_shows_everything_at_once() -> None:
    out, _ = _cut(["a", "b ", "c"], [], strip=False)
    assert out == ["a", "b ", "c", ""]


def test_answer_text_with_stops_and_a_split_character() -> None:
    f = FAMILIES["2.6"]
    pieces = {1: b"Hi \xe4\xb8", 2: b"\x96\xe7\x95\x8c STO", 3: b"P after", 4: f.bos_token.encode()}
    specials = {f.bos_token: 4}
    t = AnswerText(lambda tok, special: pieces[tok], f, specials, (), False, stops=["STOP"])
    shown = [t.push(4), t.push(1), t.push(2)]
    assert shown[0] == "" and "\ufffd" not in "".join(shown)  # a leading BOS dropped; 世 not split
    assert not t.stopped
    shown.append(t.push(3))
    assert t.stopped and "".join(shown) + t.flush() == "Hi 世界 " and t.final == "Hi 世界"


def test_utf8_split_over_three_tokens() -> None:
    ids = {0: b"\xf0", 1: b"\x9f\x98", 2: b"\x80!"}
    d = TextDecoder(lambda t: ids[t], clean_spaces=False)
    assert [d.push(0), d.push(1), d.push(2), d.flush()] == ["", "", "😀!", ""]
