"""The vision tower as Hugging Face's SigLIP / Idefics2 classes store it (`vpm.embeddings.*`,
`vpm.encoder.layers.N.*`), for the converter and the test checkpoints.

GGUF names are llama.cpp's `clip-impl.h` ones, as its legacy converter writes them: fc1/fc2 under the swapped names
`ffn_down`/`ffn_up`, so that llama.cpp of any era loads the files.
"""

from __future__ import annotations

from typing import Any

# original vision name (without "vpm.") -> GGUF name
GLOBAL = {
    "embeddings.patch_embedding.weight": "v.patch_embd.weight",
    "embeddings.patch_embedding.bias": "v.patch_embd.bias",
    "embeddings.position_embedding.weight": "v.position_embd.weight",
    "post_layernorm.weight": "v.post_ln.weight",
    "post_layernorm.bias": "v.post_ln.bias",
}
LAYER = {
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.out_proj.weight": "attn_out.weight", "self_attn.out_proj.bias": "attn_out.bias",
    "layer_norm1.weight": "ln1.weight", "layer_norm1.bias": "ln1.bias",
    "layer_norm2.weight": "ln2.weight", "layer_norm2.bias": "ln2.bias",
    "mlp.fc1.weight": "ffn_down.weight", "mlp.fc1.bias": "ffn_down.bias",  # legacy swapped naming
    "mlp.fc2.weight": "ffn_up.weight", "mlp.fc2.bias": "ffn_up.bias",
}
POSITIONS = 4900  # the 70 x 70 position table


class SiglipConverter:
    """A tower in HF SigLIP names; `vision_config` from config.json (these checkpoints always have one)."""

    def vision_config(self, cfg: dict, where: str) -> dict:
        if isinstance(cfg.get("vision_config"), dict):
            return cfg["vision_config"]
        from ...convert.safetensors_io import CheckpointError

        raise CheckpointError(f"{where}: missing key 'vision_config'")

    def vision_table(self, cfg: dict, n_layers: int, width: int) -> list[tuple[str, str, Any, tuple | None]]:
        out: list[tuple[str, str, Any, tuple | None]] = [(f"vpm.{hf}", gg, None, None) for hf, gg in GLOBAL.items()]
        for i in range(n_layers):
            out += [(f"vpm.encoder.layers.{i}.{hf}", f"v.blk.{i}.{gg}", None, None) for hf, gg in LAYER.items()]
        return out

    def stored_layer_names(self, n_layers: int, n_stored: int) -> list[str]:
        """Layers stored but never run (a dropped last layer)."""
        return [f"vpm.encoder.layers.{i}.{hf}" for i in range(n_layers, n_stored) for hf in LAYER]

    def resampler_table(self, cfg: dict) -> list[tuple[str, str, Any, tuple, tuple]]:
        return []  # every resampler tensor is stored as it is used

    def llm_kv(self, writer: Any, cfg: dict) -> None:
        pass


def shapes(width: int, ffn: int, layers: int) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, init kind) of a tower of these dimensions, in the original names."""
    D, F = width, ffn
    out = [("vpm.embeddings.patch_embedding.weight", (D, 3, 14, 14), "linear"),
           ("vpm.embeddings.patch_embedding.bias", (D,), "bias"),
           ("vpm.embeddings.position_embedding.weight", (POSITIONS, D), "embed")]
    for i in range(layers):
        b = f"vpm.encoder.layers.{i}."
        for n in ("q", "k", "v", "out"):
            out += [(f"{b}self_attn.{n}_proj.weight", (D, D), "linear"), (f"{b}self_attn.{n}_proj.bias", (D,), "bias")]
        out += [(f"{b}layer_norm1.weight", (D,), "norm"), (f"{b}layer_norm1.bias", (D,), "bias"),
                (f"{b}layer_norm2.weight", (D,), "norm"), (f"{b}layer_norm2.bias", (D,), "bias"),
                (f"{b}mlp.fc1.weight", (F, D), "linear"), (f"{b}mlp.fc1.bias", (F,), "bias"),
                (f"{b}mlp.fc2.weight", (D, F), "linear"), (f"{b}mlp.fc2.bias", (D,), "bias")]
    return [*out, ("vpm.post_layernorm.weight", (D,), "norm"), ("vpm.post_layernorm.bias", (D,), "bias")]
