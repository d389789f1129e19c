"""OmniLMM-12B's test checkpoints, in the real release's layout: `pytorch_model.bin` (a torch pickle), config.json
(`model_type` "omnilmm", Mistral's keys, `image_size`, `num_query`), Zephyr's tokenizer files (Mistral's
SentencePiece settings: byte fallback and a dummy prefix; the nine added tokens after its pieces, special; pad = eos;
Zephyr's chat template) and timm's Eva names for the tower (the last of its blocks is not stored).

`vision_config` is our addition, as for 2.0: the original builds its tower from the timm name alone, which cannot say
a tiny tower's width or heads (a test registers that tower under the name)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..family import SpmSettings
from ..presets import Preset
from .convert import EVA02_E

TIMM_TOWER = "eva02_enormous_patch14_clip_224.laion2b_plus"
# Zephyr-7B-beta's chat template (its tokenizer_config.json), which the original renders its messages with
ZEPHYR_TEMPLATE = ("{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + "
                   "message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + "
                   "message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'"
                   "  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n"
                   "{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}")
PRESETS = {
    # unusual dimensions: a 5-head tower of width 80 (4 blocks built, 3 run) on a 336 x 336 square (24 x 24 tokens:
    # the 16 x 16 table resized up), resampler width 256 (2 heads) with 64 queries (its 8 x 8 key table resized to
    # 24 x 24), a GQA language model (4 heads on 2)
    "tiny-omnilmm": Preset("omnilmm", 80, 4, 5, 200, 256, 2, 4, 2, 384, 700, "BF16", image_size=336, query_num=64),
    # the real OmniLMM-12B tower (EVA02-E, 63 of 64 blocks run) and resampler (256 x 4096), Mistral's width and
    # heads on two layers
    "real-omnilmm": Preset("omnilmm", 1792, 64, 16, 15360, 4096, 2, 32, 8, 14336, 700, "BF16", image_size=448),
}


class Recipe:
    presets = PRESETS
    tokenizer_corpus = ("<|system|>\nYou are an assistant.\n<|user|>\nWhat is in the image?\n<|assistant|>\n"
                        "A red car.\n",)
    ignore_merges = nfc = False
    spm = SpmSettings(pieces=(), dummy_prefix=True)  # Mistral's tokenizer.model: no user-defined pieces
    appended_tokens = ("<im_patch>", "<im_start>", "<im_end>", "<box>", "</box>", "<ref>", "</ref>", "<quad>",
                       "</quad>")  # added after the model's pieces, in this order (the training code's calls)
    weights_file = "pytorch_model.bin"

    def configs(self, p: Any, f: Any, ids: dict[str, int], vocab_size: int) -> dict[str, Any]:
        config = {
            "_name_or_path": f"minicpmv-edge/{'tiny' if p.llm_layers < 8 else 'preset'}-{f.name}",
            "architectures": ["OmniLMMForCausalLM"], "model_type": "omnilmm", "bos_token_id": ids["<s>"],
            "eos_token_id": ids["</s>"], "pad_token_id": ids["</s>"], "hidden_act": "silu",
            "hidden_size": p.llm_width, "initializer_range": 0.02, "intermediate_size": p.llm_ffn,
            "max_position_embeddings": 32768, "num_attention_heads": p.llm_heads, "num_hidden_layers": p.llm_layers,
            "num_key_value_heads": p.llm_kv_heads, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "sliding_window": 4096, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
            "transformers_version": "4.35.0", "use_cache": False, "vocab_size": vocab_size,
            "mm_vision_tower": TIMM_TOWER, "image_size": p.image_size or f.scale_resolution,
            "num_query": p.queries(f), "mm_use_im_start_end": True, "fully_tune": True, "tune_CLIP": True,
            "tune_mm_mlp_adapter": False, "use_mm_proj": True,
            "vision_config": {"hidden_size": p.vision_width, "num_attention_heads": p.vision_heads,
                              "intermediate_size": p.vision_ffn, "num_hidden_layers": p.vision_layers,
                              "patch_size": EVA02_E["patch_size"], "image_size": EVA02_E["image_size"]},
        }
        gen = {"_from_model_config": True, "bos_token_id": ids["<s>"], "eos_token_id": ids["</s>"],
               "transformers_version": "4.35.0"}
        decoder = {str(ids[t]): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                 "single_word": False, "special": True}
                   for t in ("<unk>", "<s>", "</s>", *self.appended_tokens)}
        tok_cfg = {
            "add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": decoder,
            "additional_special_tokens": list(self.appended_tokens), "bos_token": "<s>",
            "chat_template": ZEPHYR_TEMPLATE, "clean_up_tokenization_spaces": False, "eos_token": "</s>",
            "legacy": True, "model_max_length": 1000000000000000019884624838656, "pad_token": "</s>",
            "sp_model_kwargs": {}, "spaces_between_special_tokens": False, "tokenizer_class": "LlamaTokenizer",
            "unk_token": "<unk>", "use_default_system_prompt": True,
        }
        special_map = {"additional_special_tokens": list(self.appended_tokens), "bos_token": "<s>",
                       "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"}
        added = {t: ids[t] for t in self.appended_tokens}
        return {"config.json": config, "generation_config.json": gen, "tokenizer_config.json": tok_cfg,
                "special_tokens_map.json": special_map, "added_tokens.json": added}

    def vision_shapes(self, p: Any, f: Any) -> list[tuple[str, tuple[int, ...], str]]:
        return []  # model_shapes lists every tensor

    def model_shapes(self, p: Any, f: Any, vocab_size: int) -> list[tuple[str, tuple[int, ...], str]]:
        """timm's Eva under model.vision_tower. (blocks 0 .. layers-2: the last is Identity and not stored), the
        resampler under model.resampler., Mistral under model. and lm_head."""
        D, F, E, Q = p.vision_width, p.vision_ffn, p.llm_width, p.queries(f)
        g = EVA02_E["image_size"] // EVA02_E["patch_size"]
        vt, rs = "model.vision_tower.", "model.resampler."
        out: list[tuple[str, tuple[int, ...], str]] = [
            (f"{vt}cls_token", (1, 1, D), "embed"), (f"{vt}pos_embed", (1, 1 + g * g, D), "embed"),
            (f"{vt}patch_embed.proj.weight", (D, 3, 14, 14), "linear"), (f"{vt}patch_embed.proj.bias", (D,), "bias")]
        for i in range(p.vision_layers - 1):
            b = f"{vt}blocks.{i}."
            out += [(f"{b}norm1.weight", (D,), "norm"), (f"{b}norm1.bias", (D,), "bias"),
                    (f"{b}attn.q_bias", (D,), "bias"), (f"{b}attn.v_bias", (D,), "bias"),
                    (f"{b}attn.qkv.weight", (3 * D, D), "linear"),
                    (f"{b}attn.proj.weight", (D, D), "linear"), (f"{b}attn.proj.bias", (D,), "bias"),
                    (f"{b}norm2.weight", (D,), "norm"), (f"{b}norm2.bias", (D,), "bias"),
                    (f"{b}mlp.fc1.weight", (F, D), "linear"), (f"{b}mlp.fc1.bias", (F,), "bias"),
                    (f"{b}mlp.fc2.weight", (D, F), "linear"), (f"{b}mlp.fc2.bias", (D,), "bias")]
        out += [(f"{vt}norm.weight", (D,), "norm"), (f"{vt}norm.bias", (D,), "bias"),
                (f"{rs}query", (Q, E), "embed"), (f"{rs}pos_embed", (Q, E), "sincos"),
                (f"{rs}kv_proj.weight", (E, D), "linear"), (f"{rs}attn.in_proj_weight", (3 * E, E), "linear"),
                (f"{rs}attn.in_proj_bias", (3 * E,), "bias"), (f"{rs}attn.out_proj.weight", (E, E), "linear"),
                (f"{rs}attn.out_proj.bias", (E,), "bias")]
        for n in ("ln_q", "ln_kv", "ln_post"):
            out += [(f"{rs}{n}.weight", (E,), "norm"), (f"{rs}{n}.bias", (E,), "bias")]
        out += [(f"{rs}proj", (E, E), "linear"), ("model.embed_tokens.weight", (vocab_size, E), "embed")]
        kv, qd = p.llm_kv_heads * (E // p.llm_heads), E
        for i in range(p.llm_layers):
            b = f"model.layers.{i}."
            out += [(f"{b}self_attn.q_proj.weight", (qd, E), "linear"),
                    (f"{b}self_attn.k_proj.weight", (kv, E), "linear"),
                    (f"{b}self_attn.v_proj.weight", (kv, E), "linear"),
                    (f"{b}self_attn.o_proj.weight", (E, qd), "linear"),
                    (f"{b}mlp.gate_proj.weight", (p.llm_ffn, E), "linear"),
                    (f"{b}mlp.up_proj.weight", (p.llm_ffn, E), "linear"),
                    (f"{b}mlp.down_proj.weight", (E, p.llm_ffn), "linear"),
                    (f"{b}input_layernorm.weight", (E,), "norm"),
                    (f"{b}post_attention_layernorm.weight", (E,), "norm")]
        return [*out, ("model.norm.weight", (E,), "norm"), ("lm_head.weight", (vocab_size, E), "linear")]

    def write_weights(self, folder: Path, tensors: list, dtype: str) -> None:
        """The real release's single torch pickle; `tensors`: (name, shape, make) made one at a time."""
        from ...convert.torch_pickle import write_torch_checkpoint

        write_torch_checkpoint(folder / self.weights_file, tensors, dtype)
