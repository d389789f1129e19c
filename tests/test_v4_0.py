"""MiniCPM-V 4.0 against an independent reference: its language model (MiniCPM4 as transformers' LlamaForCausalLM
with `rope_scaling` longrope, built from the same config and weights) and its whole pipeline (reference/pipeline.py:
2.6's processor layout, BOS from the Llama tokenizer). The tiny checkpoint (families/v4_0/recipe.py) has a head
size of 40 with a 256-wide model of 8 heads (not 32), grouped queries (8 / 2), and LongRoPE factors between about
0.46 and 52 that change strongly from pair to pair.

Also: our file runs LongRoPE through llama.cpp's `rope_freqs` tensor, and a file without it (as llama.cpp's own
converter writes 4.0: `rope.scaling.type` longrope and no factors) runs plain RoPE, which the reference with plain
RoPE matches and the real model does not; the converter refuses the LongRoPE settings one `rope_freqs` cannot carry."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from helpers import message_images
from PIL import Image

from minicpmv_edge.chat import MiniCPMV
from minicpmv_edge.convert import CheckpointError, convert_checkpoint
from minicpmv_edge.convert.gguf_out import GGUFFile, PlannedTensor
from minicpmv_edge.families import FAMILIES, llm_architectures
from minicpmv_edge.llama_adapter import ContextParams, LlamaModel, LlamaSession
from minicpmv_edge.llm_file import check_llm_file
from minicpmv_edge.text import AnswerText
from reference import slicing
from reference.llm import load_llm, load_tokenizer, logits
from reference.pipeline import reference_pipeline

N_TOKENS = 16
GREEDY = {"sampling": False, "num_beams": 1, "repetition_penalty": 1.0}
LENGTHS = (9, 150, 400)  # prompt lengths whose last logits are compared
# f32 everywhere, no flash attention (its f16 accumulation alone moves logits by ~3e-4)
CONTEXT = ContextParams(n_ctx=1024, n_batch=512, n_threads=2, kv_type="f32", flash_attn=False)


def _image(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 90 * np.sin(xx / (5 + seed)), 128 + 90 * np.cos(yy / 9), 255 * yy / max(h, 1)], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8))


SCENARIOS = {
    "small image": [{"role": "user", "content": [_image(300, 200, 1), "What is in the image?"]}],
    "two images": [{"role": "user", "content": [_image(640, 480, 2), _image(200, 900, 3),
                                                "Which image has more stripes?"]}],
    "text only": [{"role": "user", "content": "Tell me about the weather, please."}],
    "two turns, system prompt": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": [_image(777, 333, 4), "What is this?"]},
        {"role": "assistant", "content": "A test pattern with stripes."},
        {"role": "user", "content": "How many stripes are there?"}],
}


@pytest.fixture(scope="module")
def ours(converted):
    return converted("4.0", "f32")


@pytest.fixture(scope="module")
def reference(tiny_hf) -> torch.nn.Module:
    return load_llm(tiny_hf["4.0"])


@pytest.fixture(scope="module")
def plain_reference(tiny_hf, tmp_path_factory) -> torch.nn.Module:
    """The same language model with plain RoPE (rope_scaling removed)."""
    hf = tmp_path_factory.mktemp("plain-4.0") / "hf"
    shutil.copytree(tiny_hf["4.0"], hf)
    cfg = json.loads((hf / "config.json").read_text())
    cfg["rope_scaling"] = None
    (hf / "config.json").write_text(json.dumps(cfg))
    return load_llm(hf)


@pytest.fixture(scope="module")
def llamacpp_style(ours, tmp_path_factory) -> Path:
    """Our language model as llama.cpp's converter writes 4.0's (conversion/base.py writes `rope.scaling.type`
    longrope; conversion/llama.py writes factors only for llama3): `rope_freqs` dropped, the longrope key added."""
    r = gguf.GGUFReader(ours.model)
    dst = tmp_path_factory.mktemp("llamacpp-4.0") / "model-f32.gguf"
    out = GGUFFile(dst, "llama")
    for name, field in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        vtype = field.types[0]
        out.writer.add_key_value(name, field.contents(), vtype,
                                 sub_type=field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None)
    out.writer.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)
    plan = []
    for t in r.tensors:
        if t.name == "rope_freqs.weight":
            continue
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        data = np.asarray(t.data).reshape(shape)
        plan.append(PlannedTensor(t.name, shape, t.tensor_type, lambda d=data: d))
    out.write_tensors(plan)
    out.commit()
    return dst


def _ids(n: int, seed: int) -> list[int]:
    return [1, *(int(i) for i in np.random.default_rng(seed).integers(3, 700, n - 1))]


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


class _Llm:
    """A language-model GGUF run by llama.cpp: the last position's logits, and greedy steps."""

    def __init__(self, path: Path) -> None:
        self.model = LlamaModel(check_llm_file(path, llm_architectures()))

    def last_logits(self, ids: list[int]) -> np.ndarray:
        s = LlamaSession(self.model, CONTEXT)
        try:
            s.decode_tokens(ids)
            return s.logits().copy()
        finally:
            s.close()

    def greedy(self, ids: list[int], n: int) -> list[int]:
        s = LlamaSession(self.model, CONTEXT)
        out: list[int] = []
        try:
            s.decode_tokens(ids)
            for _ in range(n):
                out.append(int(s.logits().argmax()))
                s.decode_tokens(out[-1:])
        finally:
            s.close()
        return out

    def close(self) -> None:
        self.model.close()


def _ref_greedy(model: torch.nn.Module, ids: list[int], n: int) -> list[int]:
    out: list[int] = []
    for _ in range(n):
        out.append(int(logits(model, ids + out)[-1].argmax()))
    return out


def test_transformers_longrope_is_the_fact_sheets_formula(reference, tiny_hf) -> None:
    """transformers 4.46's longrope for this config: inv_freq_i = 1 / (short_factor_i * 10000^(2i / head_dim)) and
    an attention factor of 1 (factor 1.0, no top-level original_max_position_embeddings): what `rope_freqs`
    carries (fact sheet §6.2)."""
    cfg = json.loads((tiny_hf["4.0"] / "config.json").read_text())
    rot = reference.model.rotary_emb
    assert rot.rope_type == "longrope" and rot.attention_scaling == 1.0
    d, f = cfg["head_dim"], np.asarray(cfg["rope_scaling"]["short_factor"], np.float64)
    assert d == 40 and len(f) == 20 and f.max() / f.min() > 50
    want = 1.0 / (f * 10000.0 ** (np.arange(0, d, 2) / d))
    np.testing.assert_allclose(rot.inv_freq.double().numpy(), want, rtol=1e-6)


def test_language_model_logits_equal_transformers(ours, reference) -> None:
    llm = _Llm(ours.model)
    try:
        for n in LENGTHS:
            ids = _ids(n, n)
            assert _rel(llm.last_logits(ids), logits(reference, ids)[-1].numpy()) <= 1e-4, n
        ids = _ids(120, 7)
        assert llm.greedy(ids, N_TOKENS) == _ref_greedy(reference, ids, N_TOKENS)
    finally:
        llm.close()


def test_plain_rope_would_not_match(ours, reference, plain_reference, llamacpp_style, caplog) -> None:
    """Without the factors (llama.cpp's converter's file) llama.cpp runs plain RoPE: it equals transformers with
    plain RoPE, and both are far from the LongRoPE model; loading such a file warns."""
    with caplog.at_level(logging.WARNING, logger="minicpmv_edge"):
        check_llm_file(ours.model, llm_architectures())
        assert "LongRoPE" not in caplog.text
        plain = _Llm(llamacpp_style)
        assert "says its RoPE is LongRoPE but holds no factors" in caplog.text
    try:
        for n in LENGTHS[1:]:
            ids = _ids(n, n)
            got = plain.last_logits(ids)
            want = logits(reference, ids)[-1].numpy()
            assert _rel(got, logits(plain_reference, ids)[-1].numpy()) <= 1e-4, n
            assert _rel(got, want) > 0.05, n
            assert _rel(logits(plain_reference, ids)[-1].numpy(), want) > 0.05, n
    finally:
        plain.close()


def test_files_say_what_llamacpp_reads(ours, tiny_hf) -> None:
    """llama.cpp's `llama` with the explicit head size (attention.key_length / value_length, which its loader reads
    in place of embedding_length / head_count, and rope.dimension_count, which it requires to equal it), the
    LongRoPE factors as `rope_freqs` and no rope.scaling.type (with longrope its loader would not read
    `rope_freqs`); the mmproj is llama.cpp's resampler version 5."""
    cfg = json.loads((tiny_hf["4.0"] / "config.json").read_text())
    r = gguf.GGUFReader(ours.model)
    kv = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    assert kv["general.architecture"] == "llama"
    assert (kv["llama.attention.key_length"], kv["llama.attention.value_length"]) == (40, 40)
    assert kv["llama.rope.dimension_count"] == 40
    assert (kv["llama.attention.head_count"], kv["llama.attention.head_count_kv"]) == (8, 2)
    assert "llama.rope.scaling.type" not in kv and "llama.embedding_scale" not in kv
    freqs = next(t for t in r.tensors if t.name == "rope_freqs.weight")
    np.testing.assert_array_equal(np.asarray(freqs.data, np.float32),
                                  np.asarray(cfg["rope_scaling"]["short_factor"], np.float32))
    mm = {k: f.contents() for k, f in gguf.GGUFReader(ours.mmproj).fields.items() if not k.startswith("GGUF.")}
    assert (mm["clip.projector_type"], mm["clip.minicpmv_version"]) == ("resampler", 5)


def _factors(cfg: dict) -> list[float]:
    return cfg["rope_scaling"]["short_factor"]


@pytest.mark.parametrize(("change", "words"), [
    (lambda c: c["rope_scaling"].update(long_factor=[2 * x for x in _factors(c)]), "long_factor differs"),
    (lambda c: c["rope_scaling"].update(factor=2.0), "attention factor other than 1"),
    (lambda c: c.update(original_max_position_embeddings=4096), "attention factor other than 1"),
    (lambda c: c["rope_scaling"].update(short_factor=_factors(c)[:-1], long_factor=None), "must be 20 numbers"),
    (lambda c: c.update(rope_scaling=None), "uses longrope"),
    (lambda c: c.update(scale_emb=12), "scale_emb 12"),
])
def test_the_converter_refuses_what_rope_freqs_cannot_carry(tiny_hf, tmp_path: Path, change, words: str) -> None:
    hf = tmp_path / "hf"
    shutil.copytree(tiny_hf["4.0"], hf)
    cfg = json.loads((hf / "config.json").read_text())
    change(cfg)
    (hf / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=words):
        convert_checkpoint(hf, tmp_path / "out", "f32", progress=False)
    assert not list((tmp_path / "out").glob("*.gguf"))


# ---- the whole pipeline against the reference pipeline ----

@pytest.fixture(scope="module")
def pipeline(tiny_hf):
    return reference_pipeline(tiny_hf["4.0"])


@pytest.fixture(scope="module")
def runtime(ours):
    with MiniCPMV(ours.model, ours.mmproj, n_ctx=4096, n_threads=2, kv_type="f32", flash_attn=False) as m:
        yield m


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_prompt_and_embeddings_equal_the_reference(pipeline, runtime, scenario: str) -> None:
    """The same prompt ids (BOS first, ChatML, 2.6's placeholders and image ids) and every image's embedding rows
    within 1e-4 of their largest."""
    msgs = SCENARIOS[scenario]
    ids, _ = pipeline.prompt(msgs)
    assert ids[0] == pipeline.tok.bos_token_id
    assert runtime.prompt_ids(msgs) == ids
    images = message_images(msgs)
    for img in images:
        want = np.concatenate([pipeline.vision.encode(slicing.normalize(p), rule="hf")
                               for p in slicing.pieces(img, 9)])
        _, _, got = runtime.encoder.encode_image(np.asarray(img.convert("RGB")), 9)
        assert got.shape == want.shape
        assert _rel(got, want) <= 1e-4


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_greedy_answers_equal_the_reference(pipeline, runtime, scenario: str) -> None:
    msgs = SCENARIOS[scenario]
    want, first = pipeline.generate(msgs, n_tokens=N_TOKENS)
    text = runtime.chat(msgs, max_new_tokens=N_TOKENS, **GREEDY)
    assert _rel(runtime.last.first_logits, first) <= 1e-3
    assert runtime.last.tokens == want
    assert text == pipeline.decode(want)


@pytest.mark.parametrize("skip", [False, True])
def test_answer_text_is_the_fast_tokenizers_decode(ours, tiny_hf, skip: bool) -> None:
    """transformers' LlamaTokenizerFast decodes a run of byte-fallback tokens as one string, U+FFFD for each of its
    bytes where it is not UTF-8 (a byte stream would keep the valid ones), and with skip_special_tokens drops every
    special added token first (so runs around one join): the stream and the final text, on token lists rich in
    byte tokens, valid and broken runs and special tokens (id 0, `<unk>`, deleted as the original chat() does)."""
    tok = load_tokenizer(tiny_hf["4.0"])
    vocab = tok.get_vocab()
    byte_ids = [vocab[f"<0x{b:02X}>"] for b in (0x35, 0x2F, 0xE4, 0xBD, 0xA0, 0xC3, 0xA9, 0xF0, 0x9F)]
    special = [vocab[t] for t in ("<image>", "<|im_start|>", "<ref>", "<s>")]
    m = LlamaModel(check_llm_file(ours.model, llm_architectures()))
    try:
        rng = np.random.default_rng(5)
        for case in range(40):
            n = int(rng.integers(1, 30))
            pool = [*byte_ids * 4, *special, 0, *(int(i) for i in rng.integers(3, 700, 20))]
            ids = [int(pool[i]) for i in rng.integers(0, len(pool), n)]
            if case == 0:  # a broken run, a valid one ("你" and "é"), a special token between two halves of "é"
                ids = [byte_ids[2], byte_ids[0], byte_ids[1], 300, byte_ids[2], byte_ids[3], byte_ids[4],
                       byte_ids[5], special[0], byte_ids[6]]
            want = tok.decode([t for t in ids if t != 0], skip_special_tokens=skip).strip()
            text = AnswerText(m.piece, FAMILIES["4.0"], m.file.specials, m.file.pieces, skip, (), True,
                              m.file.add_space_prefix)
            stream = "".join(text.push(t) for t in ids) + text.flush()
            assert (text.final, stream) == (want, want), ids
    finally:
        m.close()
