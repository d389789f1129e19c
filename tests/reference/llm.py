"""The language model as transformers runs it (Qwen2ForCausalLM for 2.6, LlamaForCausalLM for 2.5), as the
original builds its `llm`."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

from .checkpoint import load_config, load_state


def load_llm(hf_dir: Path) -> torch.nn.Module:
    cfg = load_config(hf_dir)
    cls_name = {"2.6": "Qwen2ForCausalLM", "2.5": "LlamaForCausalLM"}[str(cfg["version"])]
    cls = getattr(transformers, cls_name)
    conf_cls = cls.config_class
    keep = {k: v for k, v in cfg.items() if k not in ("architectures", "auto_map", "model_type", "vision_config",
                                                       "slice_config", "version", "_name_or_path")}
    config = conf_cls(**keep)
    config._attn_implementation = "eager"
    model = cls(config)
    state = {k.removeprefix("llm."): v for k, v in load_state(hf_dir).items() if k.startswith("llm.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert all("rotary" in m for m in missing), missing
    return model.float().eval()


@torch.no_grad()
def logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    """[len(ids), vocab] float32 logits for every position."""
    return model(torch.tensor([ids])).logits[0].float()
