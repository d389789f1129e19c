"""MiniCPM-V 4.6 test checkpoints in the released layout (transformers' `MiniCPMV4_6ForConditionalGeneration` names,
config.json with `text_config` / `vision_config`, preprocessor_config.json, generation_config.json, tokenizer.json,
tokenizer_config.json and chat_template.jinja), copying every setting of the released files that changes behaviour:
the tied head, the Qwen3.5 tokenizer's split and NFC normaliser, the added tokens and which of them are not special,
the generation defaults, the preprocessing keys. `tiny-4.6` has unusual dimensions (an insert layer that is not 6,
a 42 x 42 position grid, more linear value heads than key heads, irregular layer types); `real-4.6` has the released
tower, mergers and LLM width with a two-layer language model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..presets import Preset

TF_VERSION = "5.7.0"  # what the released config.json says it was written with


@dataclass(frozen=True)
class Preset46(Preset):
    insert_layer: int = 6
    grid: int = 70  # position table side: vision image_size / patch_size
    head_dim: int = 256
    linear_key_heads: int = 16
    linear_value_heads: int = 16
    linear_head_dim: int = 128
    layer_types: tuple[str, ...] = ()  # empty: every 4th layer full, as Qwen3.5's default


L, A = "linear_attention", "full_attention"
PRESETS = {
    "tiny-4.6": Preset46("4.6", 96, 5, 3, 200, 128, 5, 4, 2, 352, 1000, "BF16", insert_layer=2, grid=42,
                         head_dim=64, linear_key_heads=2, linear_value_heads=4, linear_head_dim=32,
                         layer_types=(L, L, A, L, A)),
    "real-4.6": Preset46("4.6", 1152, 27, 16, 4304, 1024, 2, 8, 2, 3584, 1000, "BF16", insert_layer=6, grid=70,
                         head_dim=256, linear_key_heads=16, linear_value_heads=16, linear_head_dim=128,
                         layer_types=(L, A)),
}


class Recipe:
    tokenizer_corpus: tuple[str, ...] = (
        "<think>\n\n</think>\n\n", "Let me think about the picture first.", "图中是一座山。",
    )
    ignore_merges = False
    nfc = True  # Qwen3.5's tokenizer.json normalises to NFC
    spm = None
    presets = PRESETS

    def layer_types(self, p: Any) -> list[str]:
        return list(p.layer_types) or [A if (i + 1) % 4 == 0 else L for i in range(p.llm_layers)]

    def configs(self, p: Any, f: Any, ids: dict[str, int], vocab_size: int) -> dict[str, Any]:
        text = {
            "model_type": "qwen3_5_text", "architectures": ["Qwen3_5ForCausalLM"], "hidden_size": p.llm_width,
            "intermediate_size": p.llm_ffn, "num_hidden_layers": p.llm_layers, "num_attention_heads": p.llm_heads,
            "num_key_value_heads": p.llm_kv_heads, "head_dim": p.head_dim, "hidden_act": "silu",
            "layer_types": self.layer_types(p), "full_attention_interval": 4, "linear_conv_kernel_dim": 4,
            "linear_key_head_dim": p.linear_head_dim, "linear_value_head_dim": p.linear_head_dim,
            "linear_num_key_heads": p.linear_key_heads, "linear_num_value_heads": p.linear_value_heads,
            "attn_output_gate": True, "mamba_ssm_dtype": "float32", "max_position_embeddings": 262144,
            "rms_norm_eps": 1e-6, "partial_rotary_factor": 0.25,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25},
            "vocab_size": vocab_size, "tie_word_embeddings": True, "mtp_num_hidden_layers": 1,
            "mtp_use_dedicated_embeddings": False, "attention_bias": False, "attention_dropout": 0.0,
            "bos_token_id": None, "eos_token_id": ids["<|endoftext|>"], "pad_token_id": None,
        }
        vision = {
            "model_type": "minicpmv4_6_vision", "hidden_size": p.vision_width, "intermediate_size": p.vision_ffn,
            "num_hidden_layers": p.vision_layers, "num_attention_heads": p.vision_heads, "patch_size": 14,
            "image_size": 14 * p.grid, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6,
            "num_channels": 3, "insert_layer_id": p.insert_layer,
        }
        config = {
            "_name_or_path": f"minicpmv-edge/{p.family}-{'tiny' if p.llm_width < 512 else 'real-dims'}",
            "architectures": ["MiniCPMV4_6ForConditionalGeneration"], "model_type": "minicpmv4_6",
            "insert_layer_id": p.insert_layer, "image_size": 1120, "drop_vision_last_layer": False,
            "image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
            "tie_word_embeddings": True, "bos_token_id": None, "eos_token_id": ids["<|endoftext|>"],
            "pad_token_id": None, "text_config": text, "vision_config": vision,
            "torch_dtype": "bfloat16", "transformers_version": TF_VERSION,
        }
        pre = {
            "image_processor_type": "MiniCPMV4_6ImageProcessor", "processor_class": "MiniCPMV4_6Processor",
            "max_slice_nums": 9, "scale_resolution": 448, "patch_size": 14, "use_image_id": True,
            "slice_mode": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        }
        gen = {"bos_token_id": ids["<|im_start|>"], "do_sample": True,
               "eos_token_id": [ids["<|endoftext|>"], ids["<|im_end|>"]], "temperature": 0.7, "top_k": 0,
               "top_p": 1.0, "repetition_penalty": 1.0, "transformers_version": TF_VERSION}
        plain = set(f.plain_tokens)
        tok_cfg = {
            "tokenizer_class": "TokenizersBackend", "add_bos_token": False, "add_prefix_space": False,
            "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None,
            "model_max_length": 262144, "clean_up_tokenization_spaces": False, "errors": "replace",
            "added_tokens_decoder": {
                str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                         "special": t not in plain} for t, i in ids.items()},
            "extra_special_tokens": {
                "image_token": "<|image_pad|>", "video_token": "<|video_pad|>", "image_start_token": "<image>",
                "image_end_token": "</image>", "slice_start_token": "<slice>", "slice_end_token": "</slice>",
                "image_id_start_token": "<image_id>", "image_id_end_token": "</image_id>"},
            "processor_class": "MiniCPMV4_6Processor",
        }
        return {"config.json": config, "preprocessor_config.json": pre, "generation_config.json": gen,
                "tokenizer_config.json": tok_cfg}

    def text_files(self, f: Any) -> dict[str, str]:
        return {"chat_template.jinja": f.chat_template}

    def vision_shapes(self, p: Any, f: Any) -> list[tuple[str, tuple[int, ...], str]]:
        return []  # model_shapes() lists every tensor

    def model_shapes(self, p: Any, f: Any, vocab_size: int) -> list[tuple[str, tuple[int, ...], str]]:
        """(name, shape, init kind) of every tensor, in the released checkpoint's names."""
        D, F, E = p.vision_width, p.vision_ffn, p.llm_width
        vt, out = "model.vision_tower.", []
        out += [(f"{vt}embeddings.patch_embedding.weight", (D, 3, 14, 14), "linear"),
                (f"{vt}embeddings.patch_embedding.bias", (D,), "bias"),
                (f"{vt}embeddings.position_embedding.weight", (p.grid * p.grid, D), "embed")]

        def block(b: str, attention_only: bool = False) -> list[tuple[str, tuple[int, ...], str]]:
            o = [(f"{b}layer_norm1.weight", (D,), "norm"), (f"{b}layer_norm1.bias", (D,), "bias")]
            for n in ("q", "k", "v", "out"):
                o += [(f"{b}self_attn.{n}_proj.weight", (D, D), "linear"),
                      (f"{b}self_attn.{n}_proj.bias", (D,), "bias")]
            if not attention_only:
                o += [(f"{b}layer_norm2.weight", (D,), "norm"), (f"{b}layer_norm2.bias", (D,), "bias"),
                      (f"{b}mlp.fc1.weight", (F, D), "linear"), (f"{b}mlp.fc1.bias", (F,), "bias"),
                      (f"{b}mlp.fc2.weight", (D, F), "linear"), (f"{b}mlp.fc2.bias", (D,), "bias")]
            return o

        for i in range(p.vision_layers):
            out += block(f"{vt}encoder.layers.{i}.")
        out += [(f"{vt}post_layernorm.weight", (D,), "norm"), (f"{vt}post_layernorm.bias", (D,), "bias")]
        m = f"{vt}vit_merger."
        out += block(m, attention_only=True)
        out += [(f"{m}pre_norm.weight", (4 * D,), "norm"), (f"{m}pre_norm.bias", (4 * D,), "bias"),
                (f"{m}linear_1.weight", (4 * F, 4 * D), "linear"), (f"{m}linear_1.bias", (4 * F,), "bias"),
                (f"{m}linear_2.weight", (D, 4 * F), "linear"), (f"{m}linear_2.bias", (D,), "bias")]
        mm = "model.merger.mlp.0."
        out += [(f"{mm}pre_norm.weight", (4 * D,), "norm"), (f"{mm}pre_norm.bias", (4 * D,), "bias"),
                (f"{mm}linear_1.weight", (4 * D, 4 * D), "linear"), (f"{mm}linear_1.bias", (4 * D,), "bias"),
                (f"{mm}linear_2.weight", (E, 4 * D), "linear"), (f"{mm}linear_2.bias", (E,), "bias")]
        lm = "model.language_model."
        out += [(f"{lm}embed_tokens.weight", (vocab_size, E), "tied_embed"), (f"{lm}norm.weight", (E,), "zero_norm")]
        H, KV, hd = p.llm_heads, p.llm_kv_heads, p.head_dim
        nk, nv, dk = p.linear_key_heads, p.linear_value_heads, p.linear_head_dim
        for i, kind in enumerate(self.layer_types(p)):
            b = f"{lm}layers.{i}."
            out += [(f"{b}input_layernorm.weight", (E,), "zero_norm"),
                    (f"{b}post_attention_layernorm.weight", (E,), "zero_norm"),
                    (f"{b}mlp.gate_proj.weight", (p.llm_ffn, E), "linear"),
                    (f"{b}mlp.up_proj.weight", (p.llm_ffn, E), "linear"),
                    (f"{b}mlp.down_proj.weight", (E, p.llm_ffn), "linear")]
            if kind == A:
                a = f"{b}self_attn."
                out += [(f"{a}q_proj.weight", (2 * H * hd, E), "linear"), (f"{a}k_proj.weight", (KV * hd, E), "linear"),
                        (f"{a}v_proj.weight", (KV * hd, E), "linear"), (f"{a}o_proj.weight", (E, H * hd), "linear"),
                        (f"{a}q_norm.weight", (hd,), "zero_norm"), (f"{a}k_norm.weight", (hd,), "zero_norm")]
            else:
                a, conv = f"{b}linear_attn.", 2 * nk * dk + nv * dk
                out += [(f"{a}in_proj_qkv.weight", (conv, E), "linear"),
                        (f"{a}in_proj_z.weight", (nv * dk, E), "linear"),
                        (f"{a}in_proj_b.weight", (nv, E), "linear"), (f"{a}in_proj_a.weight", (nv, E), "linear"),
                        (f"{a}conv1d.weight", (conv, 1, 4), "linear"), (f"{a}dt_bias", (nv,), "bias"),
                        (f"{a}A_log", (nv,), "log_decay"), (f"{a}norm.weight", (dk,), "norm"),
                        (f"{a}out_proj.weight", (E, nv * dk), "linear")]
        return out


RECIPE = Recipe()
