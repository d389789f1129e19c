"""Reading an original-layout checkpoint with the safetensors package's torch loader (not our reader)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file


def load_state(hf_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors, as float32."""
    state: dict[str, torch.Tensor] = {}
    index = hf_dir / "model.safetensors.index.json"
    files = ["model.safetensors"]
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    for f in files:
        state.update({k: v.float() for k, v in load_file(hf_dir / f).items()})
    return state


def load_config(hf_dir: Path) -> dict:
    return json.loads((hf_dir / "config.json").read_text())
