"""MiniCPM-V 2.0 (openbmb/MiniCPM-V-2): SigLIP-400M in timm's layout with its position table resized to each
piece and exact GELU, a resampler with a stored query table, MiniCPM-2.4B (llama.cpp's `minicpm`), a SentencePiece
vocabulary and the original chat()'s own prompt format, its legacy decode (decode.py) and its repetition penalty
counting the BOS that transformers 4.36 put first. No video recipe, no system prompt."""

from __future__ import annotations

from ..family import ChatDefaults, Family
from ..v2_6 import GROUNDING
from .convert import TimmConverter, detects
from .decode import sentencepiece_legacy_text
from .recipe import Recipe


def minicpm_template(display: str) -> str:
    """The original chat() builds its prompt in code: BOS, then `<用户>` + text for user turns and `<AI>` + text for
    assistant turns, with nothing between them, then `<AI>`. There is no system prompt."""
    return ("{{ bos_token }}{% for message in messages %}"
            f"{{% if message['role'] == 'system' %}}{{{{ raise_exception('{display} has no system prompt') }}}}"
            "{% elif message['role'] == 'user' %}{{ '<用户>' + message['content'] }}"
            "{% else %}{{ '<AI>' + message['content'] }}{% endif %}{% endfor %}{{ '<AI>' }}")


MINICPM2_TEMPLATE = minicpm_template("MiniCPM-V 2.0")

FAMILY = Family(
    name="2.0",
    display="MiniCPM-V 2.0",
    llm_arch="minicpm",
    llm_qkv_bias=False,
    tokenizer="spm",
    tokenizer_pre="",
    pretokenize_regex="",
    add_bos=True,
    permute_qk=True,
    query_num=64,
    projector_type="minicpmv-2.0",  # unknown to llama.cpp: it refuses the file instead of misreading it
    mmproj_version=None,
    position_ids=None,
    vision_position="resampled_grid",
    vision_gelu="erf",
    resampler_query_pos=True,
    padded_vision_batch=False,
    slicing="slices",
    resampler_keys="sincos",
    max_slice_nums=9,
    scale_resolution=448,
    patch_size=14,
    use_image_id=False,
    bos_token="<s>",
    eos_token="</s>",
    pad_token="<unk>",
    stop_tokens=("</s>",),
    special_tokens=("<image>", "</image>", *GROUNDING, "<slice>", "</slice>"),  # after <unk> <s> </s>
    chat_template=MINICPM2_TEMPLATE,
    slice_open="<image>",
    slice_close="</image>",
    grid_open="<slice>",
    grid_close="</slice>",
    chat=ChatDefaults(max_new_tokens=1024),
    clean_up_spaces=False,
    text_drops_pad=True,  # pad is <unk> (id 0): the original deletes it from the answer
    penalty_history=("<s>",),  # transformers 4.36 (the version 2.0 pins) starts input_ids at [BOS]
    detects=detects,
    config_hint="a timm SigLIP 'vision_encoder'",
    answer_decode=sentencepiece_legacy_text,
    converter=TimmConverter(),
    recipe=Recipe(),
)
