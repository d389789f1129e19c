"""The prompt layout, without a model: each family's image placeholder and chat format written out here from the
original processors (`processing_minicpmv.py` `get_slice_image_placeholder`, the chat templates) and compared with
build_prompt's positions, over a vocabulary that spells text one character per token."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from minicpmv_edge.families import FAMILIES
from minicpmv_edge.messages import Turn
from minicpmv_edge.prompt import build_prompt

Q = 3  # rows per piece (any number: the layout does not depend on it)
ROWS = "\x00"  # in an expected string: the next Q image rows


class CharVocab:
    """Special tokens get ids 1..n; any other character c is the token 1000 + ord(c)."""

    def __init__(self, specials: list[str]) -> None:
        self.specials = {t: i + 1 for i, t in enumerate(dict.fromkeys(specials))}

    def tokenize(self, text: str, add_special: bool = False, parse_special: bool = True) -> list[int]:
        return [1000 + ord(c) for c in text]


@dataclass
class Picture:  # what build_prompt needs of an encoded image
    grid: tuple[int, int] | None


def expected(layout: str, vocab: CharVocab, grids: list) -> list:
    """Positions of a layout string: special tokens by longest match, each ROWS the next piece's Q rows (pieces in
    order: each image's overview, then its slices), any other character itself."""
    pieces = iter([(i, k) for i, g in enumerate(grids) for k in range(1 + (g[0] * g[1] if g else 0))])
    names = sorted(vocab.specials, key=len, reverse=True)
    out: list = []
    i = 0
    while i < len(layout):
        if layout[i] == ROWS:
            image, k = next(pieces)
            out += [(image, k * Q + r) for r in range(Q)]
            i += 1
            continue
        tok = next((t for t in names if layout.startswith(t, i)), None)
        out.append(vocab.specials[tok] if tok else 1000 + ord(layout[i]))
        i += len(tok) if tok else 1
    return out


def placeholder(family: str, grid: tuple[int, int] | None, index: int, image_id: bool) -> str:
    """One image as the family's original processor writes it."""
    if family == "2.6":
        s = (f"<image_id>{index}</image_id>" if image_id else "") + f"<image>{ROWS}</image>"
        if grid:
            s += "\n".join("".join(f"<slice>{ROWS}</slice>" for _ in range(grid[0])) for _ in range(grid[1]))
        return s
    s = f"<image>{ROWS}</image>"  # 2.5 and 2.0: slices inside <slice> ... </slice>, each an <image> piece; 1.0
    if grid:
        s += "<slice>" + "\n".join("".join(f"<image>{ROWS}</image>" for _ in range(grid[0]))
                                   for _ in range(grid[1])) + "</slice>"
    return s


def conversation(family: str, user: list[str]) -> str:
    """A one-turn conversation (its messages' contents) in the family's chat format."""
    if family == "2.6":
        return ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" +
                "".join(f"<|im_start|>user\n{c}<|im_end|>\n" for c in user) + "<|im_start|>assistant\n")
    if family == "2.5":
        return ("<|begin_of_text|>" + "".join(f"<|start_header_id|>user<|end_header_id|>\n\n{c.strip()}<|eot_id|>"
                                               for c in user) + "<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "<s>" + "".join(f"<用户>{c}" for c in user) + "<AI>"


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("grids", [[None], [(2, 1)], [(2, 2), None], [(1, 3)]])
def test_layout_matches_the_original_processor(name: str, grids: list) -> None:
    f = FAMILIES[name]
    if name == "1.0":  # the original squashes every image to one piece: no grid ever reaches the layout
        grids = [None] * len(grids)
    vocab = CharVocab([*f.special_tokens, f.bos_token, f.eos_token, *f.stop_tokens, "<unk>"])
    pictures = [Picture(g) for g in grids]
    turns = [Turn("user", [*pictures, "What is it?"])]
    got = build_prompt(f.chat_template, turns, f, vocab, Q, f.use_image_id).positions
    content = "\n".join([*(placeholder(name, g, i, f.use_image_id) for i, g in enumerate(grids)), "What is it?"])
    assert got == expected(conversation(name, [content]), vocab, grids)


def test_typed_special_strings_stay_text() -> None:
    f = FAMILIES["2.6"]
    vocab = CharVocab([*f.special_tokens, f.bos_token, f.eos_token])
    typed = "a<|im_end|>b<image>"
    plain = build_prompt(f.chat_template, [Turn("user", [typed])], f, vocab, Q, False).positions
    parsed = build_prompt(f.chat_template, [Turn("user", [typed])], f, vocab, Q, False, parse_special=True).positions
    n_plain = sum(1 for p in plain if p in (vocab.specials["<|im_end|>"], vocab.specials["<image>"]))
    n_parsed = sum(1 for p in parsed if p in (vocab.specials["<|im_end|>"], vocab.specials["<image>"]))
    assert n_parsed - n_plain == 2  # the two the user typed, only with parse_special
