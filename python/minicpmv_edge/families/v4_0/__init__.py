"""MiniCPM-V 4.0 (openbmb/MiniCPM-V-4): 2.6's SigLIP-400M tower (NaViT position buckets) and resampler at width
2560 (20 heads of 128), and MiniCPM4-3B run as transformers' LlamaForCausalLM with LongRoPE (llama.cpp's `llama`,
an explicit head size of 128, the factors as `rope_freqs`: convert.py), a SentencePiece vocabulary, ChatML, image
ids and 2.6's video recipe (its frames as images).

Sources (fact sheet minicpmv-4.0-4.5.md; the original 4.0 remote files were not reachable, so much is read from the
author's transformers port and vLLM): §1, §2.2, §5.1, §6.2, §7-§8 (4.0 lines), §10, §11. Choices where the sheet
marks 4.0 unverified, each as the closest documented behaviour: the template is 2.6's ChatML (with its default
system turn); BOS `<s>` starts every prompt (LlamaTokenizerFast adds it in the processor's plain encode()); the
SentencePiece model has no dummy prefix and is read in legacy mode (as MiniCPM's 2.0 vocabulary); no `scale_emb`
(a config with one is refused by the converter)."""

from __future__ import annotations

from ..common.versioned import version_detector
from ..family import ChatDefaults, Family, SpmSettings
from ..v2_6 import CHATML_TEMPLATE, GROUNDING
from ..v2_6.video import RECIPE as VIDEO
from .convert import LongRopeLlamaConverter
from .recipe import PRESETS, Recipe

SPECIAL = ("<|im_start|>", "<|im_end|>", "<image>", "</image>", *GROUNDING, "<slice>", "</slice>", "<image_id>",
           "</image_id>")
SPM = SpmSettings(pieces=SPECIAL, dummy_prefix=False)

FAMILY = Family(
    name="4.0",
    display="MiniCPM-V 4.0",
    llm_arch="llama",
    llm_qkv_bias=False,
    tokenizer="spm",
    tokenizer_pre="",
    pretokenize_regex="",
    add_bos=True,
    permute_qk=True,  # llama.cpp's llama RoPE rotates neighbouring pairs; transformers' Llama rotates halves
    query_num=64,
    projector_type="resampler",
    mmproj_version=5,
    position_ids="navit_2d",
    vision_position="buckets",
    vision_gelu="tanh",
    resampler_query_pos=False,
    padded_vision_batch=False,
    slicing="slices",
    resampler_keys="sincos",
    max_slice_nums=9,
    scale_resolution=448,
    patch_size=14,
    use_image_id=True,
    bos_token="<s>",
    eos_token="</s>",
    pad_token="<unk>",  # chat() (as 2.6's) deletes id 0 from the answer: here `<unk>`, which prints nothing
    stop_tokens=("<|im_end|>", "</s>"),
    special_tokens=SPECIAL,  # user-defined pieces of the SentencePiece model, after <unk> <s> </s>
    chat_template="{{ bos_token }}" + CHATML_TEMPLATE,  # the BOS the tokenizer's encode() adds, then ChatML
    slice_open="<slice>",
    slice_close="</slice>",
    grid_open="",
    grid_close="",
    chat=ChatDefaults(max_new_tokens=2048),
    clean_up_spaces=False,
    text_drops_pad=True,
    byte_runs=True,  # LlamaTokenizerFast's ByteFallback decoder
    hf_version=4.0,
    vision_model_type="siglip",
    detects=version_detector(4.0),
    config_hint="config.json 'version' 4.0",
    video=VIDEO,
    converter=LongRopeLlamaConverter(),
    recipe=Recipe(PRESETS, SPM),
)
