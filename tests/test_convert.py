"""The converter: its GGUF files against transformers, the HF tokenizer and llama.cpp's own libmtmd."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest
from helpers import RESAMPLER_FAMILIES, cli, smooth_image

from minicpmv_edge import CheckpointError, UnsupportedVersionError, convert_checkpoint, recipes
from minicpmv_edge.convert.quantize import quantize_model
from minicpmv_edge.families import FAMILIES
from reference.llm import load_llm, load_tokenizer, logits
from reference.mtmd import Mtmd
from reference.vision import ReferenceVision

VERSIONS = RESAMPLER_FAMILIES  # 4.6: test_v4_6*.py
ARCH = {"2.6": "qwen2", "2.5": "llama", "2.0": "minicpm", "1.0": "minicpm", "4.0": "llama"}
TEXTS = [
    "Hello world",
    "<|im_start|>user\n<image><unk><unk></image>\nWhat is in the image?<|im_end|>\n<|im_start|>assistant\n",
    "<|start_header_id|>user<|end_header_id|>\n\n<image_id>0</image_id><slice><unk></slice><|eot_id|>",
    "图片里有什么？请详细描述这张图片。你好，世界！",
    "Emoji 😀 🎉 🚀 ❤️ 👍🏽 family 👨‍👩‍👧 and symbols © → ∞",
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n\tindent\r\n",
    "    leading spaces, trailing spaces    ",
    "\n\n\n   \n\t\t  multiple\n\n\nnewlines",
    "numbers 1234567 3.14159 1e-6 and 2026-11-26",
    "it's we'll they'd I'M YOU'RE",
    "Ünïcödé àccents and ŁÓDŹ, Привет мир, مرحبا, שלום, 안녕하세요",
    "",
    " ",
    "<image>",
    "<|endoftext|><|im_end|>",
    "<用户><image><unk><unk></image><slice><image><unk></image></slice>\nWhat is in the image?<AI>A red car.",
]


def _llama(path: Path, **kw) -> llama_cpp.Llama:
    # f32 KV cache and no flash attention: the f32 file must be compared without llama.cpp's f16 shortcuts
    return llama_cpp.Llama(str(path), n_ctx=256, logits_all=True, verbose=False, type_k=0, type_v=0,
                           flash_attn=False, n_threads=2, **kw)


def _scores(llm: llama_cpp.Llama, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)])


@pytest.mark.parametrize("version", VERSIONS)
def test_llm_logits_match_the_reference(tiny_hf, converted, version: str) -> None:
    """transformers' classes for 2.6/2.5, the MiniCPM reference for 2.0 (its scalings included): the GGUF runs in
    plain llama_cpp.Llama."""
    res = converted(version, "f32")
    ref = load_llm(tiny_hf[version])
    tok = load_tokenizer(tiny_hf[version])
    ids = tok(TEXTS[1] + TEXTS[3] + TEXTS[5])["input_ids"]
    assert len(ids) > 40
    want = logits(ref, ids).numpy()
    got = _scores(_llama(res.model), ids)
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert rel <= 1e-4, rel
    assert (got.argmax(1) == want.argmax(1)).all()


@pytest.mark.parametrize("version", VERSIONS)
def test_tokenizer_matches_hf(tiny_hf, converted, version: str) -> None:
    """2.0's and 1.0's slow SentencePiece tokenizer in legacy mode included (their file adds no dummy prefix), BOS
    added."""
    tok = load_tokenizer(tiny_hf[version])
    llm = llama_cpp.Llama(str(converted(version, "f32").model), vocab_only=True, verbose=False)
    add_bos = version != "2.6"  # Llama-3's and SentencePiece tokenizers prepend BOS; Qwen2's adds nothing
    spm = FAMILIES[version].tokenizer == "spm"
    for text in TEXTS:
        want = tok(text)["input_ids"]
        got = llm.tokenize(text.encode(), add_bos=add_bos, special=True)
        assert got == want, text
        if not spm:  # the legacy SentencePiece decode is checked in test_spm_tokenizer.py
            assert llm.detokenize(got, special=True).decode() == tok.decode(want), text


@pytest.mark.parametrize("version", VERSIONS)
def test_llm_metadata(tiny_hf, converted, version: str) -> None:
    res = converted(version, "f16")
    r = gguf.GGUFReader(res.model)
    cfg = json.loads((tiny_hf[version] / "config.json").read_text())
    tc = json.loads((tiny_hf[version] / "tokenizer_config.json").read_text())
    f = {k: v.contents() for k, v in r.fields.items()}
    arch = ARCH[version]
    assert f["general.architecture"] == arch
    spm = FAMILIES[version].tokenizer == "spm"
    assert f["tokenizer.ggml.model"] == ("llama" if spm else "gpt2")
    assert f["tokenizer.ggml.pre"] == {"2.6": "qwen2", "2.5": "llama-bpe", "2.0": "default", "1.0": "default",
                                         "4.0": "default"}[version]
    # 2.0's and 1.0's chat() build their prompt in code: the GGUF carries that format as a template; a SentencePiece
    # family's file carries its own template (4.0: ChatML after the BOS its tokenizer's encode() adds)
    want = FAMILIES[version].chat_template if spm else tc.get("chat_template", FAMILIES[version].chat_template)
    assert f["tokenizer.chat_template"] == want
    if arch == "minicpm":  # MiniCPM's scalings, as llama.cpp's minicpm graph reads them
        assert f["minicpm.embedding_scale"] == pytest.approx(cfg["scale_emb"])
        assert f["minicpm.residual_scale"] == pytest.approx(cfg["scale_depth"] / cfg["num_hidden_layers"] ** 0.5)
        assert f["minicpm.logit_scale"] == pytest.approx(cfg["hidden_size"] / cfg["dim_model_base"])
    if spm:  # the normaliser's flag, as the sentencepiece library reads it from tokenizer.model
        from sentencepiece import sentencepiece_model_pb2 as pb

        proto = pb.ModelProto.FromString((tiny_hf[version] / "tokenizer.model").read_bytes())
        assert f["tokenizer.ggml.add_space_prefix"] is proto.normalizer_spec.add_dummy_prefix is False
        assert len(f["tokenizer.ggml.scores"]) == cfg["vocab_size"]
    assert f["tokenizer.ggml.bos_token_id"] == cfg["bos_token_id"]
    assert f["tokenizer.ggml.eos_token_id"] == cfg["eos_token_id"]
    assert f[f"{arch}.block_count"] == cfg["num_hidden_layers"]
    assert f[f"{arch}.attention.head_count_kv"] == cfg["num_key_value_heads"]
    assert f[f"{arch}.rope.freq_base"] == pytest.approx(cfg["rope_theta"])
    assert len(f["tokenizer.ggml.tokens"]) == cfg["vocab_size"]
    types = {t.name: t.tensor_type.name for t in r.tensors}
    assert types["blk.0.attn_q.weight"] == "F16" and types["blk.0.attn_norm.weight"] == "F32"


@pytest.mark.parametrize("version", ["2.6", "2.5"])
def test_libmtmd_encodes_our_mmproj(tiny_hf, converted, version: str) -> None:
    """llama.cpp loads our mmproj and its 448x448 embeddings equal the PyTorch reference of the original weights."""
    res = converted(version, "f32")
    cfg = json.loads((tiny_hf[version] / "config.json").read_text())
    img = smooth_image()
    m = Mtmd(res.model, res.mmproj)
    try:
        chunks = m.encode(img)
    finally:
        m.close()
    assert len(chunks) == 1  # 448x448 is not sliced
    emb = chunks[0]
    assert emb.shape == (cfg["query_num"], cfg["hidden_size"])
    pixels = ((img.astype(np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1)
    want = ReferenceVision(tiny_hf[version]).encode(pixels, rule="floor")  # llama.cpp's position-id rule
    cos = (emb * want).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.9999, cos.min()


_MTMD_REFUSES = r"""
import sys
sys.path.insert(0, sys.argv[3])
from pathlib import Path
from reference.mtmd import Mtmd
try:
    Mtmd(Path(sys.argv[1]), Path(sys.argv[2]))
    print("loaded")
except RuntimeError as e:
    print("refused", e)
"""


def test_llama_cpp_refuses_a_2_0_mmproj_cleanly(converted) -> None:
    """Our 2.0 mmproj names a projector type llama.cpp does not know: libmtmd refuses it (no abort), instead of
    running its 2.5/2.6 graph (NaViT positions, tanh GELU) on a timm tower."""
    res = converted("2.0", "f16")
    out = subprocess.run([sys.executable, "-c", _MTMD_REFUSES, str(res.model), str(res.mmproj),
                          str(Path(__file__).parent)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("refused libmtmd could not load"), out.stdout


def test_2_0_mmproj_keys_and_tensors(tiny_hf, converted) -> None:
    r = gguf.GGUFReader(converted("2.0", "f16").mmproj)
    cfg = json.loads((tiny_hf["2.0"] / "config.json").read_text())
    vc = cfg["vision_config"]
    val = {k: v.contents() for k, v in r.fields.items()}
    assert val["clip.projector_type"] == "minicpmv-2.0"
    assert "clip.minicpmv_version" not in val and "clip.has_minicpmv_projector" not in val
    assert "clip.use_gelu" not in val and val["minicpmv_edge.vision.gelu"] == "erf"
    assert val["minicpmv_edge.vision.position_embedding"] == "resampled_grid"
    assert val["clip.vision.block_count"] == vc["num_hidden_layers"] - 1  # the last block is dropped
    t = {x.name: x for x in r.tensors}
    D, E, Q = vc["hidden_size"], cfg["hidden_size"], cfg["query_num"]
    assert [int(s) for s in t["v.position_embd.weight"].shape] == [D, 27 * 27]
    assert [int(s) for s in t["resampler.pos_embed_q"].shape] == [E, Q]
    assert t["resampler.pos_embed_q"].tensor_type.name == "F32" and "resampler.pos_embed_k" not in t
    from reference.checkpoint import load_state

    state = load_state(tiny_hf["2.0"])
    qkv = state["vpm.blocks.1.attn.qkv.weight"].numpy()
    for k, name in enumerate("qkv"):  # timm's fused qkv, split by rows
        stored = np.array(t[f"v.blk.1.attn_{name}.weight"].data, dtype=np.float32)
        np.testing.assert_array_equal(stored, qkv[k * D : (k + 1) * D].astype(np.float16))


@pytest.mark.parametrize("version", ["2.6", "2.5"])
def test_mmproj_keys_and_tensors(tiny_hf, converted, version: str) -> None:
    """llama.cpp's mmproj keys and tensors (`clip-impl.h`)."""
    r = gguf.GGUFReader(converted(version, "f16").mmproj)
    cfg = json.loads((tiny_hf[version] / "config.json").read_text())
    vc = cfg["vision_config"]
    f = {k: v for k, v in r.fields.items()}
    val = {k: v.contents() for k, v in f.items()}
    assert val["general.architecture"] == "clip"
    assert val["clip.projector_type"] == "resampler"
    assert val["clip.has_vision_encoder"] is True and val["clip.has_minicpmv_projector"] is True
    assert val["clip.use_gelu"] is True
    assert f["clip.minicpmv_version"].types == [gguf.GGUFValueType.INT32]
    assert val["clip.minicpmv_version"] == {"2.6": 3, "2.5": 2}[version]
    assert val["clip.minicpmv_query_num"] == cfg["query_num"]
    assert f["clip.vision.image_mean"].types == [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.FLOAT32]
    assert val["clip.vision.image_mean"] == [0.5] * 3 and val["clip.vision.image_std"] == [0.5] * 3
    assert val["clip.vision.image_size"] == 448 and val["clip.vision.patch_size"] == 14
    assert val["clip.vision.block_count"] == vc["num_hidden_layers"]
    assert val["clip.vision.projection_dim"] == 0
    t = {x.name: x for x in r.tensors}
    D, E, F, Q = vc["hidden_size"], cfg["hidden_size"], vc["intermediate_size"], cfg["query_num"]
    ne = {n: [int(s) for s in x.shape] for n, x in t.items()}
    assert ne["v.patch_embd.weight"] == [14, 14, 3, D]
    assert ne["v.position_embd.weight"] == [D, 4900]
    assert ne["v.blk.0.ffn_down.weight"] == [D, F]  # fc1 under the legacy swapped name
    assert ne["v.blk.0.ffn_up.weight"] == [F, D]
    assert ne["resampler.query"] == [E, Q] and ne["resampler.pos_embed_k"] == [E, 4900]
    assert ne["resampler.proj.weight"] == [E, E] and ne["resampler.kv.weight"] == [D, E]
    assert len(t) == 18 + 5 + 16 * vc["num_hidden_layers"]
    assert t["resampler.query"].tensor_type.name == "F32" and t["v.blk.0.attn_q.weight"].tensor_type.name == "F16"
    # proj is stored transposed: ggml's mul_mat(W, x) must equal x @ proj
    from reference.checkpoint import load_state

    proj = load_state(tiny_hf[version])["resampler.proj"].numpy()
    stored = np.array(t["resampler.proj.weight"].data, dtype=np.float32)
    np.testing.assert_allclose(stored, proj.T.astype(np.float16), rtol=0, atol=0)


@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0"])
def test_outtypes_run_in_llama_cpp(converted, outtype: str) -> None:
    ref_res, res = converted("2.6", "f32"), converted("2.6", outtype)
    ids = list(range(10, 60))
    want = _scores(_llama(ref_res.model), ids)
    got = _scores(_llama(res.model), ids)
    assert np.abs(got - want).max() / np.abs(want).max() < 0.05
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(res.mmproj).tensors}
    big = {"f16": "F16", "bf16": "BF16", "q8_0": "Q8_0"}[outtype]
    assert types["v.blk.0.attn_q.weight"] == big
    assert types["v.patch_embd.weight"] == "F16" and types["resampler.pos_embed_k"] == "F32"
    if outtype == "q8_0":  # rows of 200 (like SigLIP's 4304) are not whole q8_0 blocks: they stay f16
        assert types["v.blk.0.ffn_up.weight"] == "F16"
    img = smooth_image()
    embs = []
    for r in (ref_res, res):
        m = Mtmd(r.model, r.mmproj)
        try:
            embs.append(m.encode(img)[0])
        finally:
            m.close()
    a, b = embs
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99, cos.min()


@pytest.mark.parametrize("qtype", ["Q4_K_M", "Q5_K_M", "Q8_0"])
def test_quantize_with_llama_cpp(converted, tmp_path: Path, qtype: str) -> None:
    src = converted("2.6", "f16").model
    out = quantize_model(src, tmp_path / f"model-{qtype}.gguf", qtype)
    assert out.stat().st_size < src.stat().st_size
    r = gguf.GGUFReader(out)
    assert r.fields["general.file_type"].contents() == getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype}")
    kinds = {t.tensor_type.name for t in r.tensors}
    assert {"Q4_K_M": "Q4_K", "Q5_K_M": "Q5_K", "Q8_0": "Q8_0"}[qtype] in kinds
    ids = list(range(10, 40))
    want = _scores(_llama(converted("2.6", "f32").model), ids)
    got = _scores(_llama(out), ids)
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.9


def test_quantize_errors(converted, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        quantize_model(tmp_path / "missing.gguf", tmp_path / "o.gguf", "Q8_0")
    with pytest.raises(ValueError, match="unknown quantization type"):
        quantize_model(converted("2.6", "f16").model, tmp_path / "o.gguf", "Q9_X")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ValueError, match="could not quantize"):
        quantize_model(bad, tmp_path / "o.gguf", "Q8_0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gguf"]


def _split_into_shards(src: Path, dst: Path) -> None:
    """Rewrite model.safetensors as two shards plus an index, as large checkpoints are published."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    (dst / "model.safetensors").unlink()
    state = load_file(src / "model.safetensors")
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for fname, keys in shards.items():
        save_file({k: state[k] for k in keys}, dst / fname, metadata={"format": "pt"})
        weight_map.update({k: fname for k in keys})
    (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_sharded_checkpoint_gives_the_same_files(tiny_hf, converted, tmp_path: Path) -> None:
    _split_into_shards(tiny_hf["2.6"], tmp_path / "sharded")
    res = convert_checkpoint(tmp_path / "sharded", tmp_path / "out", "f16", progress=False)
    single = converted("2.6", "f16")
    assert res.model.read_bytes() == single.model.read_bytes()
    assert res.mmproj.read_bytes() == single.mmproj.read_bytes()


def test_conversion_streams_tensors(tmp_path: Path) -> None:
    """Peak Python heap while converting stays far below the model size: tensors are read one at a time."""
    p = recipes.Preset("2.6", 96, 3, 3, 200, 256, 24, 4, 2, 1024, 512, "BF16")
    hf = recipes.write_checkpoint(p, tmp_path / "deep")
    f32_bytes = (hf / "model.safetensors").stat().st_size * 2
    tracemalloc.start()
    try:
        convert_checkpoint(hf, tmp_path / "out", "f32", progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.25 * f32_bytes, (peak, f32_bytes)


# ---- refusals: a clear exception, and nothing written ----

def _edit_config(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k)
        else:
            cfg[k] = v
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def _rewrite_tensors(src: Path, dst: Path, edit) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    state = load_file(src / "model.safetensors")
    edit(state)
    save_file(state, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def _broken(tiny: Path, tmp: Path, kind: str) -> tuple[Path, type[Exception], str]:
    import torch

    if kind == "missing-dir":
        return tmp / "nope", CheckpointError, "not a directory"
    if kind == "missing-config":
        d = shutil.copytree(tiny, tmp / kind)
        (d / "config.json").unlink()
        return d, CheckpointError, "config.json: file not found"
    if kind == "missing-weights":
        d = shutil.copytree(tiny, tmp / kind)
        (d / "model.safetensors").unlink()
        return d, CheckpointError, "no model.safetensors"
    if kind == "missing-tokenizer":
        d = shutil.copytree(tiny, tmp / kind)
        (d / "tokenizer.json").unlink()
        return d, CheckpointError, "tokenizer.json: file not found"
    if kind == "truncated":
        d = shutil.copytree(tiny, tmp / kind)
        data = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(data[: len(data) - 1000])
        return d, CheckpointError, "truncated"
    if kind == "truncated-header":
        d = shutil.copytree(tiny, tmp / kind)
        data = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(data[:100])
        return d, CheckpointError, "truncated or corrupt safetensors header"
    if kind == "garbage-weights":
        d = shutil.copytree(tiny, tmp / kind)
        (d / "model.safetensors").write_bytes(struct.pack("<Q", 20) + b"{not json at all!!!}" + b"\0" * 64)
        return d, CheckpointError, "corrupt safetensors header"
    if kind == "unknown-version":
        return _edit_config(tiny, tmp / kind, version=3.7), UnsupportedVersionError, "unknown MiniCPM-V version 3.7"
    if kind == "no-version":  # neither a version key nor 2.0's timm tower name
        return (_edit_config(tiny, tmp / kind, version=None), UnsupportedVersionError,
                r"no 'version' key and nothing else that names a family \(MiniCPM-V 4.6: config.json 'model_type' "
                r"minicpmv4_6; MiniCPM-V 2.0: a timm SigLIP 'vision_encoder'; MiniCPM-V 1.0: a timm SigLIP "
                r"'vision_encoder' and no slicing keys; OmniLMM-12B: config.json 'model_type' omnilmm\).*"
                r"or name the family: convert --family")
    if kind == "missing-key":
        return _edit_config(tiny, tmp / kind, query_num=None), CheckpointError, "missing key 'query_num'"
    if kind == "missing-tensor":
        d = _rewrite_tensors(tiny, tmp / kind, lambda s: s.pop("resampler.ln_post.bias"))
        return d, CheckpointError, "missing tensor 'resampler.ln_post.bias'"
    if kind == "unexpected-tensor":
        d = _rewrite_tensors(tiny, tmp / kind, lambda s: s.update({"vpm.head.probe.weight": torch.zeros(4)}))
        return d, CheckpointError, "unexpected tensor 'vpm.head.probe.weight'"
    if kind == "wrong-shape":
        d = _rewrite_tensors(tiny, tmp / kind, lambda s: s.update({"resampler.query": torch.zeros(8, 256)}))
        return d, CheckpointError, r"'resampler.query' has shape \(8, 256\), expected \(64, 256\)"
    raise AssertionError(kind)


BROKEN = ["missing-dir", "missing-config", "missing-weights", "missing-tokenizer", "truncated", "truncated-header",
          "garbage-weights", "unknown-version", "no-version", "missing-key", "missing-tensor", "unexpected-tensor",
          "wrong-shape"]


@pytest.mark.parametrize(("change", "message"), [
    ("unknown-tower", "vision_encoder 'vit_giant_patch14_siglip_224' is not a timm tower this converter knows"),
    ("no-tokenizer-model", "tokenizer.model: file not found"),
    ("bad-tokenizer-model", "tokenizer.model: not a SentencePiece model"),
])
def test_bad_2_0_checkpoints_are_refused(tiny_hf, tmp_path: Path, change: str, message: str) -> None:
    d = shutil.copytree(tiny_hf["2.0"], tmp_path / "ckpt")
    if change == "unknown-tower":
        cfg = json.loads((d / "config.json").read_text())
        cfg["vision_encoder"] = "vit_giant_patch14_siglip_224"
        del cfg["vision_config"]
        (d / "config.json").write_text(json.dumps(cfg))
    elif change == "no-tokenizer-model":
        (d / "tokenizer.model").unlink()
    else:
        (d / "tokenizer.model").write_bytes(b"not a protobuf" * 10)
    with pytest.raises(ValueError, match=message):
        convert_checkpoint(d, tmp_path / "out", "f16", progress=False)
    assert not list(tmp_path.glob("out/*.gguf"))  # nothing half-written


@pytest.mark.parametrize("kind", BROKEN)
def test_bad_checkpoints_are_refused(tiny_hf, tmp_path: Path, kind: str) -> None:
    src, exc, message = _broken(tiny_hf["2.6"], tmp_path, kind)
    out = tmp_path / "out"
    with pytest.raises(exc, match=message):
        convert_checkpoint(src, out, "f16", progress=False)
    assert not out.exists() or list(out.iterdir()) == []


def test_failure_while_writing_leaves_nothing(tiny_hf, tmp_path: Path, monkeypatch) -> None:
    """A failure after the first file is half written (here: disk full) removes both outputs."""
    from minicpmv_edge.convert import gguf_out

    calls = {"n": 0}
    real = gguf_out.encode

    def failing(a, q):
        calls["n"] += 1
        if calls["n"] == 40:
            raise OSError(28, "No space left on device")
        return real(a, q)

    monkeypatch.setattr(gguf_out, "encode", failing)
    with pytest.raises(OSError, match="No space left"):
        convert_checkpoint(tiny_hf["2.6"], tmp_path / "out", "f16", progress=False)
    assert list((tmp_path / "out").iterdir()) == []


# ---- the command line, as a user runs it ----

def test_cli_convert_and_quantize(tiny_hf, tmp_path: Path) -> None:
    out = subprocess.run([cli(), "convert", str(tiny_hf["2.5"]), "-o", str(tmp_path), "--outtype", "q8_0"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "MiniCPM-Llama3-V 2.5" in out.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mmproj-model-q8_0.gguf", "model-q8_0.gguf"]
    script = Path(__file__).parents[1] / "tools" / "convert_hf_to_gguf.py"
    out = subprocess.run([sys.executable, str(script), str(tiny_hf["2.5"]), "-o", str(tmp_path / "s"),
                          "--outtype", "f16", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([cli(), "quantize", str(tmp_path / "s" / "model-f16.gguf"),
                          str(tmp_path / "q.gguf"), "q4_k_m"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert gguf.GGUFReader(tmp_path / "q.gguf").fields["general.file_type"].contents() == 15


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    out = subprocess.run([cli(), "convert", str(tmp_path / "absent"), "-o", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120, env={**os.environ})
    assert out.returncode == 1
    assert out.stderr.strip() == f"minicpmv-edge convert: error: {tmp_path / 'absent'}: not a directory"
    assert "Traceback" not in out.stderr
