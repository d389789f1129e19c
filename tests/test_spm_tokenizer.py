"""SentencePiece vocabularies (MiniCPM-V 1.0 and 2.0) in llama.cpp as the original tokenizes and decodes: the
converter carries the model file's normaliser flag (`add_dummy_prefix`) into `tokenizer.ggml.add_space_prefix`, and
the answer's text is decoded with it. Both settings, each against the sentencepiece library (the legacy rule: split
at the added tokens, each piece of text encoded alone) and transformers 4.36's slow Llama tokenizer (the version the
originals pin, in a process of its own): the real file's (no dummy prefix, its user-defined pieces: newline, tab,
punctuation, HTML tags, full-width digits) and a Llama-style one (a dummy prefix, only the added tokens)."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest
import sentencepiece as spm
from helpers import prompt_ids

from minicpmv_edge import recipes
from minicpmv_edge.chat import MiniCPMV
from minicpmv_edge.convert import convert_checkpoint
from minicpmv_edge.families import FAMILIES
from minicpmv_edge.families.v2_0.decode import sentencepiece_legacy_text
from minicpmv_edge.families.v2_0.recipe import SPM, Recipe
from minicpmv_edge.llama_adapter import LlamaModel
from minicpmv_edge.llm_file import check_llm_file
from minicpmv_edge.text import AnswerText, TextDecoder
from reference import isolated

pytestmark = pytest.mark.arm64  # llama.cpp's tokenizer and the aarch64 wheels

PROBES = [
    "<用户><image><unk><unk></image>\nWhat is in the image?<AI>",
    "<用户>What is shown?<AI>A street with cars.<用户>How many cars are there?<AI>",
    " leading space and  double  spaces ",
    "Line one\nLine two\n\n\tTabbed\tline \n",
    "Numbers 0 1 2 12 345 3.14159 and 2026-12-03",
    "Punctuation!? ... 。。。 ，。！？、：；《》【】 ---> a-b=c+d",
    "<html><body><p>Hello</p><br><img src='x'/></body></html> <!-- c --> <!DOCTYPE> ```code```",
    "全角文字：０１２３，ＡＢＣ＋－＝％‼",
    "literal <s> and </s> and <unk> and <image> inside",
    "<ref>Alice</ref><box>12 34</box> done.",
    "<slice>x</slice><point>1</point>",
    "图片里有什么？请详细描述这张图片。",
    "",
]


class _LlamaStyle(Recipe):
    spm = replace(SPM, pieces=FAMILIES["2.0"].special_tokens, aliases=(), dummy_prefix=True)


@pytest.fixture(scope="module", params=[False, True], ids=["real file (no dummy prefix)", "dummy prefix"])
def vocab(request, tiny_hf, converted, tmp_path_factory):
    """(dummy_prefix, checkpoint folder, its language-model GGUF) of a tiny 2.0 with that tokenizer."""
    if not request.param:
        return False, tiny_hf["2.0"], converted("2.0", "f32").model
    root = tmp_path_factory.mktemp("spm-prefix")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(FAMILIES, "2.0", replace(FAMILIES["2.0"], recipe=_LlamaStyle()))
        hf = recipes.write_checkpoint("tiny-2.0", root / "hf")
    return True, hf, convert_checkpoint(hf, root / "gguf", "f32", progress=False).model


def _legacy_encode(sp: spm.SentencePieceProcessor, added: dict[str, int], text: str) -> list[int]:
    """The slow tokenizer's legacy rule with the sentencepiece library: split at the added tokens (longest first),
    each piece of text encoded alone, one BOS first."""
    split = re.compile("(" + "|".join(re.escape(t) for t in sorted(added, key=len, reverse=True)) + ")")
    out = [1]
    for chunk in split.split(text):
        if chunk in added:
            out.append(added[chunk])
        elif chunk:
            out += sp.encode(chunk)
    return out


def _id_lists(n_vocab: int, added: set[int]) -> list[list[int]]:
    rng = np.random.default_rng(3)
    cases = []
    for _ in range(1500):
        ids = rng.integers(0, n_vocab, int(rng.integers(1, 25)))
        ids[rng.random(len(ids)) < 0.15] = rng.integers(0, 3)  # BOS, EOS and UNK inside the text too
        ids[rng.random(len(ids)) < 0.1] = rng.choice(sorted(added))
        cases.append([int(i) for i in ids])
    return cases


def _answer(ids: list[int]) -> list[int]:
    """What generation hands the text decoder: the tokens before the first EOS."""
    return ids[: ids.index(2)] if 2 in ids else ids


def test_flag_and_encoding_equal_the_originals(vocab) -> None:
    dummy_prefix, hf, gguf = vocab
    f = check_llm_file(gguf, ("minicpm",))
    assert f.add_space_prefix is dummy_prefix  # tokenizer.ggml.add_space_prefix, from the model file
    sp = spm.SentencePieceProcessor(model_file=str(hf / "tokenizer.model"))
    added = _added(hf)
    hf_ids, _ = isolated.call("reference.llm:slow_tokenizer_runs", hf, PROBES, [])
    model = LlamaModel(f)
    try:
        for text, want in zip(PROBES, hf_ids, strict=True):
            assert _legacy_encode(sp, added, text) == want, text
            assert model.tokenize(text, add_special=True, parse_special=True) == want, text
    finally:
        model.close()


def _added(hf) -> dict[str, int]:
    """tokenizer_config.json's added tokens: text -> id."""
    tc = json.loads((hf / "tokenizer_config.json").read_text())
    return {t["content"]: int(k) for k, t in tc["added_tokens_decoder"].items()}


def test_decoding_equals_the_originals(vocab) -> None:
    """The answer's final text (the slow tokenizer's legacy decode: a run keeps its leading space unless the
    normaliser added a dummy prefix), and the stream (SentencePiece's own decode of ordinary pieces, where they are
    valid UTF-8)."""
    dummy_prefix, hf, gguf = vocab
    f = check_llm_file(gguf, ("minicpm",))
    added_ids = set(_added(hf).values()) - {0, 1, 2}
    cases = _id_lists(f.n_vocab, added_ids)
    answers = [[t for t in _answer(ids) if t != 0] for ids in cases]
    _, decoded = isolated.call("reference.llm:slow_tokenizer_runs", hf, [], cases + answers)
    want, want_answer = decoded[: len(cases)], decoded[len(cases):]
    kind = lambda t: "added" if t in added_ids else "special" if t in (0, 1, 2) else "normal"  # noqa: E731
    sp = spm.SentencePieceProcessor(model_file=str(hf / "tokenizer.model"))
    model = LlamaModel(f)
    try:
        for ids, text, answer_text in zip(cases, want, want_answer, strict=True):
            assert sentencepiece_legacy_text(ids, f.pieces, kind, f.add_space_prefix) == text, ids
            answer = AnswerText(model.piece, FAMILIES["2.0"], f.specials, f.pieces, False,
                                space_prefix=f.add_space_prefix)
            for t in _answer(ids):
                answer.push(t)
            answer.flush()
            assert answer.final == answer_text.strip(), ids
            plain = [t for t in ids if kind(t) == "normal"]
            stream = TextDecoder(lambda t: model.piece(t, True), clean_spaces=False)
            text = "".join(stream.push(t) for t in plain) + stream.flush()
            if dummy_prefix and plain and f.pieces[plain[0]].startswith("▁"):
                text = text.removeprefix(" ")  # SentencePiece drops the prefix's space (the answer is stripped)
            if "\ufffd" not in sp.decode(plain):  # (invalid UTF-8: the final text above replaces it as the original)
                assert text == sp.decode(plain), plain
    finally:
        model.close()


def test_2_0_prompts_equal_the_originals(converted, tiny_hf) -> None:
    """MiniCPM-V 2.0's chat prompts with the real file's settings: the ids of the original's tokenizer (transformers
    4.36), image rows as <unk>."""
    from PIL import Image

    img = Image.fromarray(np.full((300, 500, 3), 128, np.uint8))
    conversations = [[{"role": "user", "content": [img, text]}] for text in PROBES if "<" not in text]
    conversations.append([{"role": "user", "content": [img, "What is this?"]},
                          {"role": "assistant", "content": "A grey\nrectangle. "},
                          {"role": "user", "content": " How   wide?\t"}])
    want = isolated.call("reference.pipeline:prompts", tiny_hf["2.0"], conversations)
    res = converted("2.0", "f32")
    with MiniCPMV(res.model, res.mmproj, n_threads=2) as m:
        for msgs, ids in zip(conversations, want, strict=True):
            assert prompt_ids(m, msgs) == ids, msgs
