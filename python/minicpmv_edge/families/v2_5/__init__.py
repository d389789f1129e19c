"""MiniCPM-Llama3-V 2.5 (openbmb/MiniCPM-Llama3-V-2_5): SigLIP-400M with 1-D position buckets, a padded vision
batch (batch.py) and Llama-3-8B; no image ids. Video follows 2.6's recipe (the original 2.5 has none of its own)."""

from __future__ import annotations

from ..common.siglip import SiglipConverter
from ..common.versioned import VersionedRecipe, version_detector
from ..family import ChatDefaults, Family
from ..presets import Preset
from ..v2_6 import GROUNDING
from ..v2_6.video import RECIPE
from .batch import LongestPiece

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
)
PRESETS = {"tiny-2.5": Preset("2.5", 96, 2, 3, 200, 256, 2, 4, 2, 512, 1024, "F16")}

FAMILY = Family(
    name="2.5",
    display="MiniCPM-Llama3-V 2.5",
    llm_arch="llama",
    llm_qkv_bias=False,
    tokenizer="bpe",
    tokenizer_pre="llama-bpe",
    pretokenize_regex=LLAMA3_SPLIT,
    add_bos=True,
    permute_qk=True,
    query_num=96,
    projector_type="resampler",
    mmproj_version=2,
    position_ids="flat_1d",
    vision_position="buckets",
    vision_gelu="tanh",
    resampler_query_pos=False,
    padded_vision_batch=True,
    slicing="slices",
    resampler_keys="sincos",
    max_slice_nums=9,
    scale_resolution=448,
    patch_size=14,
    use_image_id=False,
    bos_token="<|begin_of_text|>",
    eos_token="<|end_of_text|>",
    pad_token="!",
    stop_tokens=("<|eot_id|>", "<|end_of_text|>"),
    special_tokens=(
        "<|begin_of_text|>", "<|end_of_text|>", "<unk>", "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>", "<|reserved_special_token_2|>", "<|start_header_id|>",
        "<|end_header_id|>", "<|reserved_special_token_3|>", "<|eot_id|>", "<image>", "</image>", *GROUNDING,
        "<slice>", "</slice>",
    ),
    chat_template=LLAMA3_TEMPLATE,
    slice_open="<image>",
    slice_close="</image>",
    grid_open="<slice>",
    grid_close="</slice>",
    chat=ChatDefaults(max_new_tokens=1024),
    clean_up_spaces=True,
    text_drops_pad=False,  # pad is "!" (id 0): kept, as for 2.6
    hf_version="2.5",
    vision_model_type="idefics2",
    detects=version_detector(2.5),
    config_hint="config.json 'version' 2.5",
    video=RECIPE,
    vision_batch=LongestPiece(),
    converter=SiglipConverter(),
    recipe=VersionedRecipe(PRESETS, {"rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 8192,
                                     "attention_bias": False, "pretraining_tp": 1}, ignore_merges=True),
)
