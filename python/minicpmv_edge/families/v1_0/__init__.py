"""MiniCPM-V 1.0 (openbmb/MiniCPM-V, also called OmniLMM-3B): MiniCPM-V 2.0's tower, resampler and language model
with three differences, all data: every image is one square piece (the whole image squashed to `image_size`, no
slicing), the resampler's keys carry the stored 8 x 8 query table resized to the token grid (convert.py), and its
chat() defaults (beam search, 3 beams, repetition penalty 1.2, 2048 new tokens; sampling at temperature 0.6 without
a penalty). Its checkpoint has 2.0's tensors; config.json tells them apart (no slicing keys). The same
tokenizer.model as 2.0 (no dummy prefix) with fewer added tokens (no <point>, no <slice>), and 2.0's decode."""

from __future__ import annotations

from ..family import ChatDefaults, Family
from ..v2_0 import minicpm_template
from ..v2_0.decode import sentencepiece_legacy_text
from ..v2_6 import GROUNDING
from .convert import Converter, detects
from .recipe import Recipe

FAMILY = Family(
    name="1.0",
    display="MiniCPM-V 1.0",
    llm_arch="minicpm",
    llm_qkv_bias=False,
    tokenizer="spm",
    tokenizer_pre="",
    pretokenize_regex="",
    add_bos=True,
    permute_qk=True,
    query_num=64,
    projector_type="minicpmv-1.0",  # unknown to llama.cpp: it refuses the file instead of misreading it
    mmproj_version=None,
    position_ids=None,
    vision_position="resampled_grid",  # the tower's 27 x 27 table resized to the square's grid, antialiased
    vision_gelu="erf",
    resampler_query_pos=True,
    padded_vision_batch=False,
    slicing="square",
    resampler_keys="stored",
    max_slice_nums=1,
    scale_resolution=448,
    patch_size=14,
    use_image_id=False,
    bos_token="<s>",
    eos_token="</s>",
    pad_token="<unk>",  # tokenizer_config.json has none; generate() pads with id 0 and the decode drops it
    stop_tokens=("</s>",),
    special_tokens=("<image>", "</image>", *GROUNDING[:6]),  # <ref> ... </quad>; no <point>, no <slice>
    chat_template=minicpm_template("MiniCPM-V 1.0"),
    slice_open="<image>",
    slice_close="</image>",
    grid_open="",
    grid_close="",
    chat=ChatDefaults(max_new_tokens=2048, sampling=False,
                      sample=(("temperature", 0.6), ("top_p", 0.8), ("top_k", 100)),  # no repetition penalty
                      beam=(("num_beams", 3), ("repetition_penalty", 1.2))),
    clean_up_spaces=False,
    text_drops_pad=True,
    penalty_history=("<s>",),  # transformers 4.36 (the version 1.0 pins) starts input_ids at [BOS]
    detects=detects,
    config_hint="a timm SigLIP 'vision_encoder' and no slicing keys",
    answer_decode=sentencepiece_legacy_text,
    converter=Converter(),
    recipe=Recipe(),
)
