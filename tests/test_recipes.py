"""The tiny checkpoints: deterministic, in the original layout (the original checkpoints' files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from transformers import PreTrainedTokenizerFast

from minicpmv_edge import recipes
from minicpmv_edge.families import FAMILIES

pytestmark = pytest.mark.arm64  # the outcome depends on the CPU or the aarch64 wheels

# the original tokenizer_config.json files, per version (the expectation is theirs, not our versions table)
SPECIAL = {
    "2.6": ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "</image>", "<ref>", "</ref>",
            "<box>", "</box>", "<quad>", "</quad>", "<point>", "</point>", "<slice>", "</slice>",
            "<image_id>", "</image_id>"] + [f"<|reserved_special_token_{i}|>" for i in range(6)],
    "2.5": ["<|begin_of_text|>", "<|end_of_text|>", "<unk>", "<|start_header_id|>", "<|end_header_id|>",
            "<|eot_id|>", "<image>", "</image>", "<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>",
            "<point>", "</point>", "<slice>", "</slice>"],
}
CONFIG_KEYS = {  # §3.1 / §3.2
    "2.6": ["architectures", "model_type", "version", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "rms_norm_eps", "rope_theta", "max_position_embeddings",
            "vocab_size", "bos_token_id", "eos_token_id", "tie_word_embeddings", "use_sliding_window", "torch_dtype",
            "query_num", "image_size", "patch_size", "drop_vision_last_layer", "batch_vision_input", "slice_mode",
            "slice_config", "vision_config"],
    "2.5": ["architectures", "model_type", "version", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "rope_theta", "rms_norm_eps", "max_position_embeddings",
            "vocab_size", "query_num", "batch_vision_input", "drop_vision_last_layer", "slice_config",
            "vision_config", "torch_dtype"],
}


def test_generation_is_deterministic(tmp_path: Path) -> None:
    a = recipes.write_checkpoint("tiny-2.6", tmp_path / "a")
    b = recipes.write_checkpoint("tiny-2.6", tmp_path / "b")
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


@pytest.mark.parametrize("version", ["2.6", "2.5"])
def test_original_layout(tiny_hf: dict[str, Path], version: str) -> None:
    d = tiny_hf[version]
    for f in ("config.json", "preprocessor_config.json", "generation_config.json", "model.safetensors",
              "tokenizer.json", "tokenizer_config.json"):
        assert (d / f).is_file(), f
    cfg = json.loads((d / "config.json").read_text())
    assert [k for k in CONFIG_KEYS[version] if k not in cfg] == []
    assert cfg["version"] == (2.6 if version == "2.6" else "2.5")  # float for 2.6, string for 2.5 (§1)
    assert cfg["query_num"] == (64 if version == "2.6" else 96)
    assert cfg["hidden_size"] % 128 == 0
    vc = cfg["vision_config"]
    assert (vc["patch_size"], vc["image_size"], cfg["image_size"]) == (14, 980, 448)  # real slicing and 70x70 table
    assert 64 <= vc["hidden_size"] <= 128 and 2 <= vc["num_hidden_layers"] <= 3
    pre = json.loads((d / "preprocessor_config.json").read_text())
    assert pre["norm_mean"] == [0.5] * 3 and pre["norm_std"] == [0.5] * 3
    assert pre["image_feature_size"] == cfg["query_num"] and pre["scale_resolution"] == 448

    D, E, Q, F = vc["hidden_size"], cfg["hidden_size"], cfg["query_num"], vc["intermediate_size"]
    with safe_open(d / "model.safetensors", "pt") as f:
        keys = set(f.keys())
        shape = {k: tuple(f.get_slice(k).get_shape()) for k in keys}
        dtypes = {f.get_slice(k).get_dtype() for k in keys}
    assert dtypes == {"BF16" if version == "2.6" else "F16"}  # the real checkpoints' torch_dtype
    assert {k.split(".")[0] for k in keys} == {"vpm", "resampler", "llm"}
    assert shape["vpm.embeddings.patch_embedding.weight"] == (D, 3, 14, 14)
    assert shape["vpm.embeddings.position_embedding.weight"] == (4900, D)
    assert shape["vpm.encoder.layers.0.mlp.fc1.weight"] == (F, D)
    assert shape["resampler.query"] == (Q, E)
    assert shape["resampler.kv_proj.weight"] == (E, D)
    assert shape["resampler.attn.in_proj_weight"] == (3 * E, E)
    assert shape["resampler.proj"] == (E, E)
    assert "resampler.pos_embed" not in keys  # non-persistent buffer in 2.5/2.6 (§2.1)
    assert shape["llm.model.embed_tokens.weight"] == (cfg["vocab_size"], E)
    assert shape["llm.lm_head.weight"] == (cfg["vocab_size"], E)
    assert ("llm.model.layers.0.self_attn.q_proj.bias" in keys) == (version == "2.6")  # Qwen2 has q/k/v biases


@pytest.mark.parametrize("version", ["2.6", "2.5"])
def test_special_tokens_are_single_tokens(tiny_hf: dict[str, Path], version: str) -> None:
    tok = PreTrainedTokenizerFast(tokenizer_file=str(tiny_hf[version] / "tokenizer.json"))
    ids = set()
    for t in SPECIAL[version]:
        enc = tok(t, add_special_tokens=False)["input_ids"]
        assert len(enc) == 1, (t, enc)
        assert tok.decode(enc) == t
        ids.add(enc[0])
    assert len(ids) == len(SPECIAL[version])
    cfg = json.loads((tiny_hf[version] / "config.json").read_text())
    assert len(tok) == cfg["vocab_size"]


def test_pretokenizer_is_the_real_split(tiny_hf: dict[str, Path]) -> None:
    """Qwen2 splits digits one by one, Llama-3 in groups of up to three; both are byte-level."""
    def pre(version: str, text: str) -> list[str]:
        tok = PreTrainedTokenizerFast(tokenizer_file=str(tiny_hf[version] / "tokenizer.json"))
        return [p for p, _ in tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)]

    assert pre("2.6", "x 12345") == ["x", "Ġ", "1", "2", "3", "4", "5"]
    assert pre("2.5", "x 12345") == ["x", "Ġ", "123", "45"]
    assert pre("2.6", "it's  ok\n\n") == ["it", "'s", "Ġ", "Ġok", "ĊĊ"]


def test_real_dims_preset_matches_the_real_model() -> None:
    """The benchmark preset has MiniCPM-V 2.6's real vision tower and resampler (§2.1)."""
    p = recipes.PRESETS["real-2.6"]
    shapes = {n: s for n, s, _ in recipes._shapes(p, FAMILIES["2.6"], 1000)}
    assert shapes["vpm.encoder.layers.26.mlp.fc1.weight"] == (4304, 1152)
    assert "vpm.encoder.layers.27.mlp.fc1.weight" not in shapes
    assert shapes["resampler.query"] == (64, 3584)
    assert shapes["resampler.attn.in_proj_weight"] == (10752, 3584)
    assert shapes["resampler.kv_proj.weight"] == (3584, 1152)
    assert p.vision_heads == 16 and p.llm_width == 3584


def test_2_0_original_layout(tiny_hf: dict[str, Path]) -> None:
    """openbmb/MiniCPM-V-2's files: no version key, the timm tower named in vision_encoder, timm tensor names with
    the dropped last block not stored, the stored 8x8 query table, MiniCPM's scalings, a SentencePiece model."""
    from reference.vision import sincos_2d

    d = tiny_hf["2.0"]
    assert sorted(p.name for p in d.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.model",
        "tokenizer_config.json"]
    cfg = json.loads((d / "config.json").read_text())
    assert "version" not in cfg and cfg["vision_encoder"] == "vit_so400m_patch14_siglip_384.webli"
    assert cfg["drop_vision_last_layer"] is True and cfg["tie_word_embeddings"] is False
    assert {k: cfg[k] for k in ("scale_emb", "scale_depth", "query_num", "max_slice_nums", "scale_resolution")} == {
        "scale_emb": 12, "scale_depth": 1.4, "query_num": 64, "max_slice_nums": 9, "scale_resolution": 448}
    vc = cfg["vision_config"]
    D, E = vc["hidden_size"], cfg["hidden_size"]
    with safe_open(d / "model.safetensors", "pt") as f:
        keys = set(f.keys())
        shape = {k: tuple(f.get_slice(k).get_shape()) for k in keys}
        query_pos = f.get_tensor("resampler.pos_embed").float().numpy()
    assert shape["vpm.pos_embed"] == (1, 27 * 27, D) and shape["vpm.patch_embed.proj.weight"] == (D, 3, 14, 14)
    assert shape["vpm.blocks.0.attn.qkv.weight"] == (3 * D, D) and "vpm.norm.weight" in keys
    stored = {int(k.split(".")[2]) for k in keys if k.startswith("vpm.blocks.")}
    assert stored == set(range(vc["num_hidden_layers"] - 1))  # the last block is dropped, not stored
    assert "llm.lm_head.weight" in keys and not any(k.endswith(".bias") for k in keys if k.startswith("llm."))
    np.testing.assert_allclose(query_pos, sincos_2d(E, 8, 8).numpy(), atol=1e-2)  # bf16-rounded sin-cos
    tc = json.loads((d / "tokenizer_config.json").read_text())
    assert tc["legacy"] is True and tc["add_bos_token"] is True and "chat_template" not in tc


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_sentencepiece_settings_are_the_real_files(tiny_hf: dict[str, Path], version: str) -> None:
    """1.0's and 2.0's shared tokenizer.model (the 1.0 fact sheet's §8): BPE, byte fallback, split digits, an
    identity normaliser without dummy prefix or whitespace removal; user-defined pieces with the real ids (newline 5,
    "." 72, "?" 74, <image> ... </quad> 101-108, reserved pieces from 109); 2.0's config adds <point> <slice> on
    109-112, 1.0's does not (there "<slice>" is text)."""
    from sentencepiece import sentencepiece_model_pb2
    from transformers import LlamaTokenizer

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((tiny_hf[version] / "tokenizer.model").read_bytes())
    ns, ts = proto.normalizer_spec, proto.trainer_spec
    assert (ns.name, ns.add_dummy_prefix, ns.remove_extra_whitespaces) == ("identity", False, False)
    assert ts.model_type == ts.BPE and ts.byte_fallback and ts.split_digits
    user = {p.piece: i for i, p in enumerate(proto.pieces) if p.type == p.USER_DEFINED}
    assert (user["\n"], user["\t"], user["."], user["?"], user["<img>"]) == (5, 6, 72, 74, 7)
    assert [user[t] for t in ("<image>", "</image>", "<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>",
                              "<reserved_20>", "<reserved_23>")] == [*range(101, 109), 109, 112]
    tok = LlamaTokenizer.from_pretrained(str(tiny_hf[version]))
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.encode("<image>x\nWhat?")[:5] == [1, 101, tok.convert_tokens_to_ids("x"), 5,
                                                 tok.convert_tokens_to_ids("What")]  # no "▁" before a run
    slice_ids = tok.encode("<slice>", add_special_tokens=False)
    if version == "2.0":
        assert slice_ids == [111]
    else:
        assert len(slice_ids) > 1 and 111 not in slice_ids


def test_real_2_0_preset_matches_the_real_model() -> None:
    p = recipes.PRESETS["real-2.0"]
    shapes = {n: s for n, s, _ in recipes._shapes(p, FAMILIES["2.0"], 600)}
    assert shapes["vpm.blocks.25.mlp.fc1.weight"] == (4304, 1152) and "vpm.blocks.26.norm1.weight" not in shapes
    assert shapes["vpm.pos_embed"] == (1, 729, 1152)
    assert shapes["resampler.query"] == shapes["resampler.pos_embed"] == (64, 2304)
    assert shapes["resampler.attn.in_proj_weight"] == (6912, 2304)
    assert p.vision_heads == 16 and p.llm_width == 2304 and p.llm_heads == 36
