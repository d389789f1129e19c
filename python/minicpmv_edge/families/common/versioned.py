"""The original files of a checkpoint whose config.json names its version (`version` 2.6, "2.5"): config.json,
preprocessor_config.json, generation_config.json and tokenizer_config.json as the released repositories write them,
for the test checkpoints of such families."""

from __future__ import annotations

from typing import Any

from . import siglip


class VersionedRecipe:
    """Presets of one family and the files of its checkpoints; `llm_config`: the language model's own keys;
    `ignore_merges`, `nfc`: the real BPE tokenizer's settings (whole words looked up before merging, an NFC
    normaliser), which the tiny tokenizers copy."""

    tokenizer_corpus: tuple[str, ...] = ()
    spm = None  # byte-level BPE

    def __init__(self, presets: dict[str, Any], llm_config: dict[str, object], ignore_merges: bool = False,
                 nfc: bool = False) -> None:
        self.presets = presets
        self.llm_config = llm_config
        self.ignore_merges = ignore_merges
        self.nfc = nfc

    def vision_shapes(self, p: Any, f: Any) -> list[tuple[str, tuple[int, ...], str]]:
        return siglip.shapes(p.vision_width, p.vision_ffn, p.vision_layers)

    def configs(self, p: Any, f: Any, ids: dict[str, int], vocab_size: int) -> dict[str, dict[str, object]]:
        vision = {
            "hidden_size": p.vision_width, "image_size": 980, "intermediate_size": p.vision_ffn,
            "model_type": f.vision_model_type, "num_attention_heads": p.vision_heads,
            "num_hidden_layers": p.vision_layers, "patch_size": 14,
        }
        llm: dict[str, object] = {
            "hidden_act": "silu", "hidden_size": p.llm_width, "intermediate_size": p.llm_ffn,
            "num_attention_heads": p.llm_heads, "num_hidden_layers": p.llm_layers,
            "num_key_value_heads": p.llm_kv_heads, "initializer_range": 0.02, "vocab_size": vocab_size,
            "tie_word_embeddings": False, "bos_token_id": ids[f.bos_token], "eos_token_id": ids[f.eos_token],
            "rope_scaling": None, **self.llm_config,
        }
        if "max_window_layers" in llm:
            llm["max_window_layers"] = p.llm_layers
        config = {
            "_name_or_path": f"minicpmv-edge/{'tiny' if p.llm_layers < 8 else 'preset'}-{f.name}",
            "architectures": ["MiniCPMV"],
            "auto_map": {"AutoConfig": "configuration_minicpm.MiniCPMVConfig",
                         "AutoModel": "modeling_minicpmv.MiniCPMV",
                         "AutoModelForCausalLM": "modeling_minicpmv.MiniCPMV"},
            "model_type": "minicpmv",
            "version": f.hf_version,
            **llm,
            "query_num": p.queries(f), "image_size": f.scale_resolution, "patch_size": f.patch_size,
            "batch_vision_input": True, "drop_vision_last_layer": False, "slice_mode": True,
            "slice_config": {"max_slice_nums": f.max_slice_nums, "patch_size": f.patch_size, "model_type": "minicpmv"},
            "vision_config": vision,
            "torch_dtype": {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[p.dtype],
            "transformers_version": "4.40.0", "use_cache": True,
        }
        if f.use_image_id:
            config["use_image_id"] = True
            config["vision_batch_size"] = 16
        pre: dict[str, object] = {
            "image_processor_type": "MiniCPMVImageProcessor",
            "auto_map": {"AutoProcessor": "processing_minicpmv.MiniCPMVProcessor",
                         "AutoImageProcessor": "image_processing_minicpmv.MiniCPMVImageProcessor"},
            "processor_class": "MiniCPMVProcessor",
            "max_slice_nums": f.max_slice_nums, "scale_resolution": f.scale_resolution, "patch_size": f.patch_size,
            "image_feature_size": p.queries(f), "im_start": "<image>", "im_end": "</image>",
            "slice_start": "<slice>", "slice_end": "</slice>", "unk": "<unk>",
            "norm_mean": [0.5, 0.5, 0.5], "norm_std": [0.5, 0.5, 0.5], "version": float(f.hf_version),
        }
        if f.use_image_id:
            pre.update({"use_image_id": True, "im_id_start": "<image_id>", "im_id_end": "</image_id>",
                        "slice_mode": True})
        gen = {"bos_token_id": ids[f.bos_token], "eos_token_id": [ids[t] for t in f.stop_tokens],
               "pad_token_id": 0, "transformers_version": "4.40.0"}
        tok_cfg = {
            "add_bos_token": f.add_bos, "add_eos_token": False,
            "added_tokens_decoder": {
                str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                         "special": True} for t, i in ids.items()},
            "bos_token": f.bos_token, "eos_token": f.eos_token, "pad_token": f.pad_token, "unk_token": "<unk>",
            "chat_template": f.chat_template, "clean_up_tokenization_spaces": f.clean_up_spaces,
            "model_max_length": int(llm["max_position_embeddings"]),  # type: ignore[call-overload]
            "tokenizer_class": "MiniCPMVTokenizerFast",
            "auto_map": {"AutoTokenizer": [None, "tokenization_minicpmv_fast.MiniCPMVTokenizerFast"]},
        }
        return {"config.json": config, "preprocessor_config.json": pre, "generation_config.json": gen,
                "tokenizer_config.json": tok_cfg}


def version_detector(value: float) -> Any:
    """detects(config) for a family whose config.json says `version` = value (a float, or its string)."""
    def detects(cfg: dict) -> bool:
        raw = cfg.get("version")
        try:
            return raw is not None and not isinstance(raw, bool) and abs(float(raw) - value) < 1e-9
        except (TypeError, ValueError):
            return False
    return detects
