"""MiniCPM-V 2.0's test checkpoints: the files of openbmb/MiniCPM-V-2 (no `version` key, no
preprocessor_config.json, a slow Llama tokenizer in legacy mode) and its timm tower's tensor names."""

from __future__ import annotations

from typing import Any

from ..family import SpmSettings
from ..presets import Preset

# MiniCPM-V 2.0's LLM scalings (config.json), its timm tower (vit_so400m_patch14_siglip_384: 27 x 27 positions)
MINICPM_SCALES = {"scale_emb": 12, "scale_depth": 1.4, "dim_model_base": 64}  # 64: logits / 4 on the tiny widths
TIMM_TOWER = "vit_so400m_patch14_siglip_384.webli"
TIMM_GRID = 27
# The user-defined pieces of the tokenizer.model that MiniCPM-V 1.0 and 2.0 share (ids 3-108 there, in this order;
# sentencepiece always emits them whole), then the reserved pieces whose ids 2.0's tokenizer_config.json gives to
# <point> </point> <slice> </slice> (1.0's config leaves them reserved, so there "<slice>" is plain text)
_HTML = ("img", "h2", "td", "strong", "table", "tr", "li", "b", "h3", "br", "h4", "h5", "p", "h1", "tbody")
_PUNCT = ("+", "-", "=", "，", "。", "！", "？", "、", "：", "￥", ".", "!", "?", "...", "。。。", "。。。。。。", "《",
          "》", "【", "】", "『", "』", "```", "<!--", "-->", "---", "<!DOCTYPE>", "；", "．", "＝", "＜", "＞", "－",
          "＋", "％", "‼", "㊣", "／", "｜")
USER_PIECES = ("<SEP>", "<CLS>", "\n", "\t", *(t for x in _HTML for t in (f"<{x}>", f"<{x}/>", f"</{x}>")),
               *"０１２３４５６７８９", *_PUNCT, "<image>", "</image>", "<ref>", "</ref>", "<box>", "</box>", "<quad>",
               "</quad>")
RESERVED = ("<reserved_20>", "<reserved_21>", "<reserved_22>", "<reserved_23>")
SPM = SpmSettings(pieces=(*USER_PIECES, *RESERVED),
                  aliases=tuple(zip(("<point>", "</point>", "<slice>", "</slice>"), RESERVED, strict=True)),
                  dummy_prefix=False)
PRESETS = {
    # vision layers as config.json counts them: 2.0 drops (and does not store) the last one
    "tiny-2.0": Preset("2.0", 96, 3, 3, 384, 256, 2, 4, 2, 512, 600, "BF16"),
    # the real MiniCPM-V 2.0 tower (so400m, 26 of 27 blocks run) and resampler (64 x 2304), the real LLM width
    "real-2.0": Preset("2.0", 1152, 27, 16, 4304, 2304, 2, 36, 36, 5760, 600, "BF16"),
}


class Recipe:
    presets = PRESETS
    tokenizer_corpus = ("<用户>What is in the image?<AI>A red car. <用户>图片里有什么？<AI>一只小狗。",)  # turn tags
    ignore_merges = nfc = False
    spm = SPM

    def configs(self, p: Any, f: Any, ids: dict[str, int], vocab_size: int) -> dict[str, dict[str, object]]:
        """`vision_config` is our addition: the original reads its tower from the timm name alone, which cannot say
        a tiny tower's width or heads."""
        config = {
            "_name_or_path": f"minicpmv-edge/{'tiny' if p.llm_layers < 8 else 'preset'}-{f.name}",
            "architectures": ["MiniCPMV"],
            "auto_map": {"AutoConfig": "configuration_minicpm.MiniCPMVConfig",
                         "AutoModel": "modeling_minicpmv.MiniCPMV",
                         "AutoModelForCausalLM": "modeling_minicpmv.MiniCPMV"},
            "model_type": "minicpmv", "bos_token_id": ids[f.bos_token], "eos_token_id": ids[f.eos_token],
            "hidden_act": "silu", "hidden_size": p.llm_width, "initializer_range": 0.1,
            "intermediate_size": p.llm_ffn, "max_position_embeddings": 4096, "num_attention_heads": p.llm_heads,
            "num_hidden_layers": p.llm_layers, "num_key_value_heads": p.llm_kv_heads, "rms_norm_eps": 1e-5,
            "rope_scaling": None, "rope_theta": 10000.0, **MINICPM_SCALES, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "transformers_version": "4.36.0", "use_cache": True,
            "vocab_size": vocab_size, "vision_encoder": TIMM_TOWER, "query_num": p.queries(f),
            "image_size": f.scale_resolution, "patch_size": f.patch_size, "max_slice_nums": f.max_slice_nums,
            "scale_resolution": f.scale_resolution, "slice_mode": True, "drop_vision_last_layer": True,
            "mm_use_im_start_end": True,
            "vision_config": {"hidden_size": p.vision_width, "num_attention_heads": p.vision_heads,
                              "intermediate_size": p.vision_ffn, "num_hidden_layers": p.vision_layers,
                              "patch_size": f.patch_size, "image_size": TIMM_GRID * f.patch_size},
        }
        gen = {"bos_token_id": ids[f.bos_token], "eos_token_id": ids[f.eos_token], "transformers_version": "4.36.0"}
        tok_cfg = {
            "add_bos_token": True, "add_eos_token": False,
            "added_tokens_decoder": {
                str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                         "special": True} for t, i in sorted(ids.items(), key=lambda kv: kv[1])},
            "bos_token": f.bos_token, "eos_token": f.eos_token, "pad_token": f.pad_token, "unk_token": "<unk>",
            "clean_up_tokenization_spaces": f.clean_up_spaces, "legacy": True,
            "model_max_length": 1000000000000000, "sp_model_kwargs": {}, "spaces_between_special_tokens": False,
            "tokenizer_class": "LlamaTokenizerWrapper", "use_default_system_prompt": False,
        }
        special_map = {"bos_token": f.bos_token, "eos_token": f.eos_token, "unk_token": "<unk>",
                       "pad_token": f.pad_token}
        return {"config.json": config, "generation_config.json": gen, "tokenizer_config.json": tok_cfg,
                "special_tokens_map.json": special_map}

    def vision_shapes(self, p: Any, f: Any) -> list[tuple[str, tuple[int, ...], str]]:
        """The tower in timm's names: fused qkv, the dropped last block not stored."""
        D, F = p.vision_width, p.vision_ffn
        out: list[tuple[str, tuple[int, ...], str]] = [
            ("vpm.patch_embed.proj.weight", (D, 3, 14, 14), "linear"), ("vpm.patch_embed.proj.bias", (D,), "bias"),
            ("vpm.pos_embed", (1, TIMM_GRID * TIMM_GRID, D), "embed")]
        for i in range(p.vision_layers - 1):
            b = f"vpm.blocks.{i}."
            out += [(f"{b}norm1.weight", (D,), "norm"), (f"{b}norm1.bias", (D,), "bias"),
                    (f"{b}attn.qkv.weight", (3 * D, D), "linear"), (f"{b}attn.qkv.bias", (3 * D,), "bias"),
                    (f"{b}attn.proj.weight", (D, D), "linear"), (f"{b}attn.proj.bias", (D,), "bias"),
                    (f"{b}norm2.weight", (D,), "norm"), (f"{b}norm2.bias", (D,), "bias"),
                    (f"{b}mlp.fc1.weight", (F, D), "linear"), (f"{b}mlp.fc1.bias", (F,), "bias"),
                    (f"{b}mlp.fc2.weight", (D, F), "linear"), (f"{b}mlp.fc2.bias", (D,), "bias")]
        return [*out, ("vpm.norm.weight", (D,), "norm"), ("vpm.norm.bias", (D,), "bias")]
