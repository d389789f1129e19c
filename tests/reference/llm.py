"""The language model as the original runs it: transformers' Qwen2ForCausalLM (2.6) or LlamaForCausalLM (2.5) built
from the same config, as the original builds its `llm`; MiniCPM-V 2.0's MiniCPM from reference/minicpm.py."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers

from .checkpoint import load_config, load_state


def load_llm(hf_dir: Path) -> torch.nn.Module:
    cfg = load_config(hf_dir)
    if "version" not in cfg:  # MiniCPM-V 2.0: transformers has no MiniCPM class
        from .minicpm import MiniCPM

        return MiniCPM(hf_dir)
    # 4.5: Qwen3 (transformers >= 4.51: reference/v4_5.py runs it under that release)
    cls_name = {"2.6": "Qwen2ForCausalLM", "2.5": "LlamaForCausalLM", "4.5": "Qwen3ForCausalLM",
                "4.0": "LlamaForCausalLM"}[str(cfg["version"])]
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
    if hasattr(model, "embed"):  # reference MiniCPM: embeddings in, logits out
        return model(model.embed(ids)).float()
    return model(torch.tensor([ids])).logits[0].float()


def load_tokenizer(hf_dir: Path) -> transformers.PreTrainedTokenizerBase:
    """The checkpoint's tokenizer as transformers runs it: the fast BPE of tokenizer.json (2.5, 2.6), the slow
    Llama SentencePiece tokenizer in legacy mode (2.0), or the fast Llama one made from tokenizer.model (4.0)."""
    if not (hf_dir / "tokenizer.json").exists():
        if str(load_config(hf_dir).get("version")) == "4.0":  # LlamaTokenizerFast over tokenizer.model (legacy),
            # without the dummy prefix the SentencePiece model does not have (the converter would add one)
            from sentencepiece import sentencepiece_model_pb2 as pb

            proto = pb.ModelProto.FromString((hf_dir / "tokenizer.model").read_bytes())
            return transformers.LlamaTokenizerFast.from_pretrained(
                str(hf_dir), from_slow=True, legacy=True, add_prefix_space=proto.normalizer_spec.add_dummy_prefix)
        return transformers.LlamaTokenizer.from_pretrained(str(hf_dir))
    tc = json.loads((hf_dir / "tokenizer_config.json").read_text())
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(hf_dir / "tokenizer.json"), bos_token=tc["bos_token"], eos_token=tc["eos_token"],
        unk_token=tc["unk_token"], clean_up_tokenization_spaces=tc["clean_up_tokenization_spaces"])
    tok.chat_template = tc["chat_template"]
    return tok


def slow_tokenizer_runs(hf_dir: Path, texts: list[str], id_lists: list[list[int]]) -> tuple[list, list]:
    """The checkpoint's slow Llama tokenizer (legacy mode) as transformers runs it: each text encoded as the original
    chat() encodes its prompt (one BOS added), each id list decoded with special tokens kept."""
    tok = load_tokenizer(Path(hf_dir))
    return [tok.encode(t) for t in texts], [tok.decode(ids) for ids in id_lists]
