"""Original Hugging Face MiniCPM-V checkpoint -> llama.cpp GGUF files (language model + mmproj).

Reads safetensors, or a torch pickle restricted to tensors (torch_pickle.py), directly (no model class), one mapping
table per part, and writes both files atomically: either both appear complete, or neither does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..families import FAMILIES, Family, detect_hf
from .gguf_out import FILE_TYPES, GGUFFile
from .llm import plan_llm, write_llm_kv
from .mapping import Source
from .mmproj import plan_mmproj, write_mmproj_kv
from .safetensors_io import CheckpointError, SafetensorsCheckpoint, TensorFile, load_json
from .torch_pickle import TorchCheckpoint
from .vocab import read_vocab, write_vocab

__all__ = ["CheckpointError", "ConvertResult", "convert_checkpoint"]


@dataclass(frozen=True)
class ConvertResult:
    family: Family
    model: Path
    mmproj: Path

    @property
    def version(self) -> Family:
        """The family (the name of earlier releases)."""
        return self.family


_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
             "rms_norm_eps", "rope_theta", "max_position_embeddings", "query_num")
_REQUIRED_VISION = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size",
                    "image_size")


def open_checkpoint(folder: Path) -> TensorFile:
    """The folder's safetensors, else its `pytorch_model.bin` (a torch pickle, read without running code)."""
    if not any(folder.glob("*.safetensors*")) and (folder / "pytorch_model.bin").exists():
        return TorchCheckpoint(folder / "pytorch_model.bin")
    return SafetensorsCheckpoint(folder)


def convert_checkpoint(hf_dir: str | Path, out_dir: str | Path, outtype: str = "f16",
                       progress: bool = True, family: str | None = None) -> ConvertResult:
    """Write `model-<outtype>.gguf` and `mmproj-model-<outtype>.gguf` into `out_dir`. `family`: the model family
    (FAMILIES' name), for a config.json that does not say it; None: from config.json."""
    if outtype not in FILE_TYPES:
        raise ValueError(f"unknown --outtype {outtype!r} (choose from {', '.join(FILE_TYPES)})")
    hf = Path(hf_dir)
    if not hf.is_dir():
        raise CheckpointError(f"{hf}: not a directory")
    cfg = load_json(hf / "config.json")
    if family is None:
        f = detect_hf(cfg, str(hf / "config.json"))
    elif family in FAMILIES:
        f = FAMILIES[family]
    else:
        raise ValueError(f"unknown family {family!r} (choose from {', '.join(FAMILIES)})")
    where = str(hf / "config.json")
    conv = f.layout_converter
    if conv is not None:  # a layout of its own (4.6): its converter checks the config, plans and writes the keys
        cfg = conv.config(cfg, where)

        def plans(src: Source, pre: dict, qtype) -> tuple[list, list]:
            return conv.plan_llm(src, cfg, qtype), conv.plan_mmproj(src, cfg, pre, qtype)

        def keys(llm_w, mm_w, pre: dict, file_type: int, name: str) -> None:
            conv.write_llm_kv(llm_w, cfg, file_type, name, hf)
            conv.write_mmproj_kv(mm_w, cfg, pre, file_type, name)
    else:
        assert f.converter is not None
        cfg = {**cfg, "vision_config": f.converter.vision_config(cfg, where)}
        for k in _REQUIRED:
            if k not in cfg:
                raise CheckpointError(f"{where}: missing key {k!r}")
        for k in _REQUIRED_VISION:
            if k not in cfg["vision_config"]:
                raise CheckpointError(f"{where}: missing key 'vision_config.{k}'")

        def plans(src: Source, pre: dict, qtype) -> tuple[list, list]:
            return plan_llm(src, cfg, f, qtype), plan_mmproj(src, cfg, f, qtype)

        def keys(llm_w, mm_w, pre: dict, file_type: int, name: str) -> None:
            write_llm_kv(llm_w, cfg, f, file_type, name)
            write_mmproj_kv(mm_w, cfg, pre, f, file_type, name)
    pre_path = hf / "preprocessor_config.json"
    pre = load_json(pre_path) if pre_path.exists() else {}
    vocab = read_vocab(hf, f, int(cfg["vocab_size"]))
    qtype, file_type = FILE_TYPES[outtype]
    name = Path(str(cfg.get("_name_or_path", hf.name))).name or hf.name

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open_checkpoint(hf) as ckpt:
        src = Source(ckpt)
        llm_plan, mm_plan = plans(src, pre, qtype)
        src.check_all_used()  # before anything is written: an unknown layout never yields a file

        model = GGUFFile(out / f"model-{outtype}.gguf", f.llm_arch)
        mmproj = GGUFFile(out / f"mmproj-model-{outtype}.gguf", "clip")
        try:
            keys(model.writer, mmproj.writer, pre, file_type, name)
            write_vocab(model.writer, vocab, f)
            with tqdm(total=len(llm_plan) + len(mm_plan), unit="tensor", desc="converting",
                      disable=not progress or None) as bar:
                model.write_tensors(llm_plan, lambda: bar.update(1))
                mmproj.write_tensors(mm_plan, lambda: bar.update(1))
        except BaseException:
            model.discard()
            mmproj.discard()
            raise
        model.commit()
        mmproj.commit()
    return ConvertResult(f, model.path, mmproj.path)
