"""Generated tokens -> text, against the transformers tokenizer of each checkpoint (its decode is what the
original chat() returns): special tokens written out, 2.5's space clean-up, split characters, streaming."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import BPE_FAMILIES

from minicpmv_edge.families.v2_0.decode import sentencepiece_legacy_text
from minicpmv_edge.llama_adapter import LlamaModel
from minicpmv_edge.llm_file import check_llm_file
from minicpmv_edge.text import TextDecoder, clean_up_spaces
from reference.llm import load_tokenizer

pytestmark = pytest.mark.arm64  # the outcome depends on the CPU or the aarch64 wheels

VERSIONS = BPE_FAMILIES  # byte-level BPE; SentencePiece (2.0) below
TEXTS = ["Hello , world . I do n't know ' s ? yes ! it 's , they 're here ' ok", "a ' b 'm 've n't .",
         "emoji 😀👍🏽 and 世界 , ünïcödé !", "  leading and trailing  ", "<ref>x</ref><box>1,2</box> done ."]


@pytest.fixture(scope="module")
def pairs(converted, tiny_hf):
    out = {}
    for v in VERSIONS:
        path = converted(v, "f32").model
        out[v] = (LlamaModel(check_llm_file(path, ("qwen2", "llama"))), load_tokenizer(tiny_hf[v]))
    yield out
    for model, _ in out.values():
        model.close()


def _decode(model: LlamaModel, ids: list[int], clean: bool, special: bool = True) -> tuple[str, list[str]]:
    d = TextDecoder(lambda t: model.piece(t, special), clean)
    pieces = [d.push(t) for t in ids] + [d.flush()]
    return "".join(pieces), pieces


@pytest.mark.parametrize("version", VERSIONS)
def test_decode_equals_the_tokenizers(pairs, version: str) -> None:
    model, tok = pairs[version]
    clean = tok.clean_up_tokenization_spaces
    assert clean == (version == "2.5")  # as the original tokenizer configs say
    rng = np.random.default_rng(0)
    cases = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    cases += [rng.integers(0, len(tok), 40).tolist() for _ in range(200)]
    for ids in cases:
        want = tok.decode(ids)
        got, pieces = _decode(model, ids, clean)
        assert got == want, (ids, got, want)
        assert all(p.encode("utf-8", errors="strict") is not None for p in pieces)
        got_skip, _ = _decode(model, ids, clean, special=False)
        assert got_skip == tok.decode(ids, skip_special_tokens=True), ids


def test_clean_up_holds_back_what_the_next_token_can_change() -> None:
    pieces = ["Hello", " ", ",", " world", " n", "'t", " '", " s", " '", "m"]
    want = clean_up_spaces("".join(pieces))
    d = TextDecoder(lambda i: pieces[i].encode(), clean_spaces=True)
    out = [d.push(i) for i in range(len(pieces))]
    assert out[1] == ""  # a trailing space waits: the next token may delete it
    assert "".join(out) + d.flush() == want == "Hello, worldn't's'm"


def _agree_4_36_and_4_46(ids: list[int], added: set[int], pieces: tuple[str, ...]) -> bool:
    """transformers 4.46 (the test extra) decodes like 4.36 (2.0's) except after BOS/EOS/UNK opening a run (between
    added tokens) when the next piece has no "▁": such sequences are left out."""
    runs, cur = [], []
    for t in ids:
        if t in added:
            runs.append(cur)
            cur = []
        else:
            cur.append(t)
    runs.append(cur)
    return not any(len(r) > 1 and r[0] in (0, 1, 2) and not pieces[r[1]].startswith("▁") for r in runs)


def test_2_0_decode_equals_the_slow_tokenizers(converted, tiny_hf) -> None:
    """MiniCPM-V 2.0's legacy SentencePiece decode (the original's transformers 4.36): runs between added tokens
    decoded apart and joined by spaces, a space before text that precedes BOS/EOS/UNK in a run, the dummy prefix
    dropped per run, invalid bytes one U+FFFD each; and the answer as the original returns it (UNK, its pad,
    dropped; a leading BOS dropped; stripped)."""
    from minicpmv_edge import VERSIONS as TABLE
    from minicpmv_edge.text import AnswerText

    tok = load_tokenizer(tiny_hf["2.0"])
    f = check_llm_file(converted("2.0", "f32").model, ("minicpm",))
    added = {tok.convert_tokens_to_ids(t) for t in tok.get_added_vocab() if t not in ("<unk>", "<s>", "</s>")}
    kind = lambda t: "added" if t in added else "special" if t in (0, 1, 2) else "normal"  # noqa: E731
    rng = np.random.default_rng(2)
    texts = ["<用户>Hello , world<ref>Alice</ref><box>1 2</box>\n  two  spaces<AI>", "<image>x<slice>  y</slice>",
             "a<s> b</s>c"]
    cases = [tok.encode(t, add_special_tokens=False) for t in texts]
    for _ in range(3000):
        ids = rng.integers(0, len(tok), int(rng.integers(1, 25)))
        ids[rng.random(len(ids)) < 0.15] = rng.integers(0, 3)  # BOS, EOS and UNK inside the text too
        cases.append([int(i) for i in ids])
    cases = [ids for ids in cases if _agree_4_36_and_4_46(ids, added, f.pieces)]
    assert len(cases) > 2000 and sum(1 for ids in cases if {0, 1, 2} & set(ids[1:])) > 500
    model = LlamaModel(f)
    for ids in cases:
        assert sentencepiece_legacy_text(ids, f.pieces, kind) == tok.decode(ids), ids
        answer = AnswerText(model.piece, TABLE["2.0"], f.specials, f.pieces, skip_special=False)
        for t in [1, *ids]:  # generation may start with BOS
            answer.push(t)
        answer.flush()
        kept = [t for t in ids if t != 0]
        if _agree_4_36_and_4_46(kept, added, f.pieces):
            assert answer.final == tok.decode(kept).strip(), ids
    model.close()
