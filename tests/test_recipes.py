"""The tiny checkpoints: deterministic, in the original layout (the original checkpoints' files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open
from transformers import PreTrainedTokenizerFast

from minicpmv_edge import recipes

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
    shapes = {n: s for n, s, _ in recipes._shapes(p, recipes.VERSIONS["2.6"], 1000)}
    assert shapes["vpm.encoder.layers.26.mlp.fc1.weight"] == (4304, 1152)
    assert "vpm.encoder.layers.27.mlp.fc1.weight" not in shapes
    assert shapes["resampler.query"] == (64, 3584)
    assert shapes["resampler.attn.in_proj_weight"] == (10752, 3584)
    assert shapes["resampler.kv_proj.weight"] == (3584, 1152)
    assert p.vision_heads == 16 and p.llm_width == 3584
