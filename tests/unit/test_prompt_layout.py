"""The prompt layout, without a model: each family's image placeholder and chat format written out here from the
original processors (`processing_minicpmv.py` `get_slice_image_placeholder`; for 4.6 transformers 5.23's
`processing_minicpmv4_6.py` `replace_image_token`, `replace_video_token`, `_prepend_local_ids`, and the fact sheet's
reconstructed chat template) and compared with build_prompt's positions, over a vocabulary that spells text one
character per token."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from minicpmv_edge.cache import EncodedVideo
from minicpmv_edge.families import FAMILIES
from minicpmv_edge.messages import Turn
from minicpmv_edge.prompt import build_prompt

Q = 3  # rows per piece of a resampler family (any number: the layout does not depend on it)
ROWS = "\x00"  # in an expected string: the next piece's image rows


class CharVocab:
    """Special tokens get ids 1..n; any other character c is the token 1000 + ord(c)."""

    def __init__(self, specials: list[str]) -> None:
        self.specials = {t: i + 1 for i, t in enumerate(dict.fromkeys(specials))}

    def tokenize(self, text: str, add_special: bool = False, parse_special: bool = True) -> list[int]:
        return [1000 + ord(c) for c in text]


@dataclass
class Picture:  # what build_prompt needs of an encoded image
    grid: tuple[int, int] | None
    tokens: tuple[int, ...] = ()  # rows of each piece (a 4.6 merger's vary by piece); (): Q each

    def rows(self) -> list[int]:
        n = 1 + (self.grid[0] * self.grid[1] if self.grid else 0)
        return list(self.tokens) or [Q] * n


def varied(grid: tuple[int, int] | None, seed: int) -> Picture:
    """A 4.6 image: every piece its own row count (the overview's differs from the slices')."""
    n = 1 + (grid[0] * grid[1] if grid else 0)
    return Picture(grid, tuple(2 + (seed + 3 * k) % 4 for k in range(n)))


def expected(layout: str, vocab: CharVocab, pictures: list[Picture]) -> list:
    """Positions of a layout string: special tokens by longest match, each ROWS the next piece's rows (pieces in
    order: each image's overview, then its slices; `pictures` in the order the prompt holds them), any other
    character itself."""
    pieces = iter([(i, sum(p.rows()[:k]), n) for i, p in enumerate(pictures) for k, n in enumerate(p.rows())])
    names = sorted(vocab.specials, key=len, reverse=True)
    out: list = []
    i = 0
    while i < len(layout):
        if layout[i] == ROWS:
            image, start, n = next(pieces)
            out += [(image, start + r) for r in range(n)]
            i += 1
            continue
        tok = next((t for t in names if layout.startswith(t, i)), None)
        out.append(vocab.specials[tok] if tok else 1000 + ord(layout[i]))
        i += len(tok) if tok else 1
    return out


def placeholder(family: str, grid: tuple[int, int] | None, index: int, image_id: bool) -> str:
    """One image as the family's original processor writes it (4.6: as 2.6, each piece with its own row count)."""
    if family == "omnilmm":  # expand_question_into_multimodal: one square, between <im_start> and <im_end>
        return f"<im_start>{ROWS}<im_end>"
    if family in ("2.6", "4.0", "4.5", "4.6"):
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
    if family == "omnilmm":  # the BOS encode() adds, the fixed system message, Zephyr's template
        system = ("You are an artificial intelligence assistant, which gives helpful, detailed, and polite answers "
                  "to the human's questions.")
        return f"<s><|system|>\n{system}</s>\n" + "".join(f"<|user|>\n{c}</s>\n" for c in user) + "<|assistant|>\n"
    if family == "4.6":  # ChatML, no default system prompt, content trimmed, an empty think block (no thinking)
        return ("".join(f"<|im_start|>user\n{c.strip()}<|im_end|>\n" for c in user) +
                "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    if family == "4.5":  # Qwen3's: no default system prompt; no think block when the template is not told
        return "".join(f"<|im_start|>user\n{c}<|im_end|>\n" for c in user) + "<|im_start|>assistant\n"
    if family == "4.0":  # 2.6's, after the BOS its Llama tokenizer adds
        return "<s>" + conversation("2.6", user)
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
    if name in ("1.0", "omnilmm"):  # the original squashes every image to one piece: no grid reaches the layout
        grids = [None] * len(grids)
    vocab = CharVocab([*f.special_tokens, f.bos_token, f.eos_token, *f.stop_tokens, "<unk>"])
    pictures = [varied(g, i) if name == "4.6" else Picture(g) for i, g in enumerate(grids)]
    turns = [Turn("user", [*pictures, "What is it?"])]
    got = build_prompt(f.chat_template, turns, f, vocab, Q, f.use_image_id).positions
    phs = [placeholder(name, g, i, f.use_image_id) for i, g in enumerate(grids)]
    # 2.6's chat() joins the parts by "\n"; 4.6's template writes "<|image_pad|>\n" per image, parts concatenated;
    # OmniLMM's chat() puts its image + "\n" before the question
    each = name in ("4.6", "omnilmm")
    content = "".join(f"{p}\n" for p in phs) + "What is it?" if each else "\n".join([*phs, "What is it?"])
    assert got == expected(conversation(name, [content]), vocab, pictures)


def test_typed_special_strings_stay_text() -> None:
    f = FAMILIES["2.6"]
    vocab = CharVocab([*f.special_tokens, f.bos_token, f.eos_token])
    typed = "a<|im_end|>b<image>"
    plain = build_prompt(f.chat_template, [Turn("user", [typed])], f, vocab, Q, False).positions
    parsed = build_prompt(f.chat_template, [Turn("user", [typed])], f, vocab, Q, False, parse_special=True).positions
    n_plain = sum(1 for p in plain if p in (vocab.specials["<|im_end|>"], vocab.specials["<image>"]))
    n_parsed = sum(1 for p in parsed if p in (vocab.specials["<|im_end|>"], vocab.specials["<image>"]))
    assert n_parsed - n_plain == 2  # the two the user typed, only with parse_special


def units(grid: tuple[int, int] | None) -> str:
    """One image's or video frame's pieces, without an id (4.6, as 2.6)."""
    return placeholder("4.6", grid, 0, False)


def _vocab46() -> tuple:
    f = FAMILIES["4.6"]
    return f, CharVocab([*f.special_tokens, f.bos_token, f.eos_token, *f.stop_tokens])


def test_4_6_video_is_one_id_then_its_frames_units_back_to_back() -> None:
    """processing_minicpmv4_6.py: `<image_id>k</image_id>` once before the video (k among the videos), each frame's
    `<image>`..`</image>` and slices concatenated; the template writes `<|video_pad|>\\n` for the video."""
    f, vocab = _vocab46()
    frames = [varied((2, 1), 0), varied(None, 1), varied((1, 2), 2)]
    got = build_prompt(f.chat_template, [Turn("user", [EncodedVideo(tuple(frames)), "Describe."])], f, vocab, 0,
                       True).positions
    content = "<image_id>0</image_id>" + "".join(units(p.grid) for p in frames) + "\nDescribe."
    assert got == expected(conversation("4.6", [content]), vocab, frames)
    without_ids = build_prompt(f.chat_template, [Turn("user", [EncodedVideo(tuple(frames)), "Describe."])], f, vocab,
                               0, False).positions
    assert without_ids == expected(conversation("4.6", [content[len("<image_id>0</image_id>"):]]), vocab, frames)


def test_4_6_images_and_videos_are_numbered_apart_over_the_conversation() -> None:
    """Images count 0, 1, ... over every turn; videos have their own count (_prepend_local_ids per token kind)."""
    f, vocab = _vocab46()
    a, b, c = varied(None, 0), varied((2, 1), 1), varied(None, 2)
    video = EncodedVideo((varied(None, 3), varied(None, 4)))
    turns = [Turn("user", [a, "One."]), Turn("assistant", ["<think>\nhm\n</think>\n\nA cat."]),
             Turn("user", [b, video, c, "Two."])]
    got = build_prompt(f.chat_template, turns, f, vocab, 0, True).positions
    want = ("<|im_start|>user\n" + f"<image_id>0</image_id>{units(None)}\nOne.<|im_end|>\n"
            "<|im_start|>assistant\nA cat.<|im_end|>\n"  # the earlier answer without its think block
            "<|im_start|>user\n" + f"<image_id>1</image_id>{units((2, 1))}\n<image_id>0</image_id>{units(None)}"
            f"{units(None)}\n<image_id>2</image_id>{units(None)}\nTwo.<|im_end|>\n"
            "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert got == expected(want, vocab, [a, b, *video.frames, c])
    rows = build_prompt(f.chat_template, turns, f, vocab, 0, True).row_tokens  # what each one's input_ids hold
    assert rows == ["<|image_pad|>", "<|image_pad|>", "<|video_pad|>", "<|video_pad|>", "<|image_pad|>"]


def test_4_6_trailing_image_and_thinking_switch() -> None:
    """The template trims a message (the "\\n" after a last image goes); enable_thinking reaches the template only
    when given: True opens a think block, False and None give the empty one."""
    f, vocab = _vocab46()
    a = varied((1, 2), 0)
    turns = [Turn("user", ["Look:", a])]
    head = f"<|im_start|>user\nLook:<image_id>0</image_id>{units((1, 2))}<|im_end|>\n<|im_start|>assistant\n"
    for kwargs, tail in (({}, "<think>\n\n</think>\n\n"), ({"enable_thinking": False}, "<think>\n\n</think>\n\n"),
                         ({"enable_thinking": True}, "<think>\n")):
        got = build_prompt(f.chat_template, turns, f, vocab, 0, True, template_kwargs=kwargs).positions
        assert got == expected(head + tail, vocab, [a]), kwargs


@pytest.mark.parametrize("name", sorted(n for n, f in FAMILIES.items() if f.video and f.video_layout.tag is None))
def test_untagged_video_is_its_frames_as_images(name: str) -> None:
    """2.6's recipe (and 2.5's) feeds a video as its frames, each an image part: unchanged by the video layout."""
    f = FAMILIES[name]
    vocab = CharVocab([*f.special_tokens, f.bos_token, f.eos_token, *f.stop_tokens, "<unk>"])
    frames = (Picture((2, 1)), Picture(None))
    ids = f.use_image_id
    as_video = build_prompt(f.chat_template, [Turn("user", [EncodedVideo(frames), "What?"])], f, vocab, Q, ids)
    as_images = build_prompt(f.chat_template, [Turn("user", [*frames, "What?"])], f, vocab, Q, ids)
    assert as_video.positions == as_images.positions and as_video.images == list(frames)
    assert as_video.row_tokens == ["<unk>", "<unk>"]


def test_piece_rows_must_match_the_grid() -> None:
    f, vocab = _vocab46()
    with pytest.raises(ValueError, match="has 3 pieces, not 2"):
        build_prompt(f.chat_template, [Turn("user", [Picture((2, 1), (4, 4)), "Hi"])], f, vocab, 0, True)
    with pytest.raises(ValueError, match="token counts"):
        build_prompt(f.chat_template, [Turn("user", [Picture(None), "Hi"])], f, vocab, 0, True)


def test_omnilmm_places_images_as_its_original() -> None:
    """OmniLMM's chat(): the image first in its message, whatever the order of the parts; with parse_special=True
    where the text says <image> (no "\\n" added), one image per marker; no system message."""
    from minicpmv_edge.messages import MessageError

    f = FAMILIES["omnilmm"]
    vocab = CharVocab([*f.special_tokens, f.bos_token, f.eos_token, "<unk>"])
    pic = Picture(None)
    got = build_prompt(f.chat_template, [Turn("user", ["What is it?", pic])], f, vocab, Q, False).positions
    assert got == expected(conversation("omnilmm", [f"<im_start>{ROWS}<im_end>\nWhat is it?"]), vocab, [pic])
    got = build_prompt(f.chat_template, [Turn("user", [pic, "Look at <image> now."])], f, vocab, Q, False,
                       parse_special=True).positions
    assert got == expected(conversation("omnilmm", [f"Look at <im_start>{ROWS}<im_end> now."]), vocab, [pic])
    plain = build_prompt(f.chat_template, [Turn("user", [pic, "Look at <image> now."])], f, vocab, Q, False).positions
    assert plain == expected(conversation("omnilmm", [f"<im_start>{ROWS}<im_end>\nLook at <image> now."]), vocab,
                             [pic])
    with pytest.raises(MessageError, match="says '<image>' 2 time"):
        build_prompt(f.chat_template, [Turn("user", [pic, "<image> and <image>"])], f, vocab, Q, False,
                     parse_special=True)
    with pytest.raises(MessageError, match="fixed system prompt"):
        build_prompt(f.chat_template, [Turn("system", ["Be brief."]), Turn("user", ["Hi"])], f, vocab, Q, False)
