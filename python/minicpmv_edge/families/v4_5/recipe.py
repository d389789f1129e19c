"""MiniCPM-V 4.5 test checkpoints in the released layout, copying every setting of the released files that changes
behaviour: the Qwen3 vocabulary's added tokens with their special flags (`<think>`, `</think>`, the tool and fim
tokens not special), `<unk>` on an id inside the BPE range, no BOS added, bos_token `<|im_start|>` in
tokenizer_config.json but `<|endoftext|>` in config.json, an explicit `head_dim`, no attention biases,
preprocessor_config.json's `version` 2.6 (what the processor compares), and generation_config.json (which chat()
never reads). `tiny-4.5` has unusual dimensions: a head size (48) that is not hidden / heads (256 / 4), grouped
queries, 3 vision heads of 32 and a vision MLP of 200; the 70 x 70 position table (image_size 980) as the real one.
`real-4.5` has the released tower and resampler (1152 wide, 27 layers, 64 x 4096, 32 heads) with a two-layer
language model of the released width and heads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..common.versioned import VersionedRecipe
from ..presets import Preset

TF_VERSION = "4.51.0"  # what the released config.json says it was written with
UNK_PLACE = 0.85  # where <unk> sits in the BPE range (the released 128244 of 151643)


@dataclass(frozen=True)
class Preset45(Preset):
    head_dim: int = 128


PRESETS = {
    "tiny-4.5": Preset45("4.5", 96, 2, 3, 200, 256, 3, 4, 2, 512, 1024, "BF16", head_dim=48),
    "real-4.5": Preset45("4.5", 1152, 27, 16, 4304, 4096, 2, 32, 8, 1024, 1024, "BF16", head_dim=128),
}


class Recipe(VersionedRecipe):
    tokenizer_corpus: tuple[str, ...] = (
        "<think>\n\n</think>\n\n", "Let me think about the picture first.", "图中是一座山。",
    )

    def place_tokens(self, tok_json: str, ids: dict[str, int]) -> tuple[str, dict[str, int]]:
        """`<unk>` as the released vocabulary has it: a BPE vocabulary entry of its own inside the BPE range (Qwen's
        vocab.json holds the string "<unk>" at 128244, reached by no merge), which the added token `<unk>` shares;
        the BPE ids from there on move up by one, into the place the added `<unk>` had, so the other added ids stay."""
        tj = json.loads(tok_json)
        vocab: dict[str, int] = tj["model"]["vocab"]
        assert ids["<unk>"] == len(vocab), "<unk> must be the first added token"
        place = int(len(vocab) * UNK_PLACE)
        vocab = {t: i + (i >= place) for t, i in vocab.items()}
        vocab["<unk>"] = place
        tj["model"]["vocab"] = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
        for t in tj["added_tokens"]:
            if t["content"] == "<unk>":
                t["id"] = place
        tj["added_tokens"].sort(key=lambda t: t["id"])
        return json.dumps(tj, indent=2, ensure_ascii=False), {**ids, "<unk>": place}

    def configs(self, p: Any, f: Any, ids: dict[str, int], vocab_size: int) -> dict[str, dict[str, object]]:
        out = super().configs(p, f, ids, vocab_size)
        config, pre, tok_cfg = out["config.json"], out["preprocessor_config.json"], out["tokenizer_config.json"]
        config.update({"head_dim": p.head_dim, "attention_bias": False, "bos_token_id": ids["<|endoftext|>"],
                       "eos_token_id": ids["<|im_end|>"], "batch_3d_resampler": True,
                       "transformers_version": TF_VERSION})
        config["use_image_id"] = True
        config["vision_config"]["hidden_act"] = "gelu_pytorch_tanh"
        pre["version"] = 2.6  # the released preprocessor_config.json says 2.6 (> 2.5: no BOS added)
        plain = set(f.plain_tokens)
        tok_cfg.update({
            "add_prefix_space": False, "errors": "replace", "split_special_tokens": False, "model_max_length": 131072,
            "added_tokens_decoder": {
                str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                         "special": t not in plain} for t, i in sorted(ids.items(), key=lambda kv: kv[1])},
        })
        out["generation_config.json"] = {
            "bos_token_id": ids["<|endoftext|>"], "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
            "pad_token_id": ids["<|endoftext|>"], "do_sample": True, "temperature": 0.6, "top_k": 20, "top_p": 0.95,
            "chat_template_kwargs": {"enable_thinking": False}, "transformers_version": TF_VERSION}
        return out


RECIPE = Recipe(PRESETS, {"rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 40960,
                          "use_sliding_window": False, "sliding_window": None, "max_window_layers": 0,
                          "attention_dropout": 0.0}, nfc=True)
