"""Generated tokens -> text, against the transformers tokenizer of each checkpoint (its decode is what the
original chat() returns): special tokens written out, 2.5's space clean-up, split characters, streaming."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import BPE_FAMILIES, RESAMPLER_FAMILIES

from minicpmv_edge.llama_adapter import LlamaModel
from minicpmv_edge.llm_file import check_llm_file
from minicpmv_edge.text import TextDecoder, clean_up_spaces
from reference.llm import load_tokenizer

pytestmark = pytest.mark.arm64  # the outcome depends on the CPU or the aarch64 wheels

# byte-level BPE; SentencePiece (1.0, 2.0): test_spm_tokenizer.py; 4.6 (a tokenizer transformers 4.46 cannot load):
# its answers' text against transformers 5.23's decode in test_v4_6.py
VERSIONS = [v for v in BPE_FAMILIES if v in RESAMPLER_FAMILIES]
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


