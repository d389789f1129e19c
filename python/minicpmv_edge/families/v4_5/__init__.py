"""MiniCPM-V 4.5 (openbmb/MiniCPM-V-4_5): 2.6's SigLIP-400M tower and resampler (now E = 4096, 32 heads; the same
2D graph for images) with a Qwen3-8B language model (llama.cpp's `qwen3`: per-head q/k RMS norms before RoPE, no
q/k/v biases, an explicit head size). What differs from 2.6, all data here: the Qwen3 vocabulary's ids (`<unk>`
inside the BPE range, `<think>` and the tool/fim tokens not special), the Qwen3 chat template with
`enable_thinking`, which chat() always passes (False unless told), chat()'s sampling settings per thinking mode,
`<think>\\n` put before a thinking answer, and `clip.minicpmv_version` 6.

Sources (docs/sources.md, /work/shared/spec/minicpmv-4.0-4.5.md): the released repository's config.json,
tokenizer_config.json, added_tokens.json, generation_config.json, preprocessor_config.json, modeling_minicpmv.py
(chat()), resampler.py; transformers 4.51's Qwen3; llama.cpp's `clip-impl.h` (version 6) and qwen3 loader."""

from __future__ import annotations

from ..common.siglip import SiglipConverter
from ..common.versioned import version_detector
from ..family import ChatDefaults, Family
from ..v2_6 import GROUNDING, QWEN2_SPLIT
from .recipe import RECIPE
from .video import VIDEO

# the released tokenizer's added tokens after its BPE vocabulary, ids 151643..151747 in this order
# (tokenizer_config.json's added_tokens_decoder); `<unk>` (128244) sits inside the BPE range (recipe.py places it)
QWEN = ("<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
        "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
PLAIN = ("<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
         "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>")
ADDED = ("<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", *QWEN, *PLAIN, "<image>", "</image>", *GROUNDING,
         "<slice>", "</slice>", "<image_id>", "</image_id>", "<unit>", "</unit>",
         *(f"<|reserved_{i}|>" for i in range(63)))

# The released template's behaviour for the messages chat() builds (no tools), written here from its description
# (fact sheet §7): no default system turn; a system turn only first; user turns verbatim; an earlier answer keeps
# only what follows its `</think>` (leading newlines dropped), unless it comes after the last user turn, where a
# think block is written out; the generation prompt's think block follows `enable_thinking`: an empty one when it
# is false, an open one when it is true, none when it is not passed.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' -%}"
    "{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' -}}{%- endif -%}"
    "{%- set ns = namespace(last_user=messages|length - 1, seen=false) -%}"
    "{%- for message in messages -%}{%- if message['role'] == 'user' -%}"
    "{%- set ns.last_user = loop.index0 -%}{%- endif -%}{%- endfor -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' or (message['role'] == 'system' and not loop.first) -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{%- set content = message['content'] -%}{%- set thought = '' -%}"
    "{%- if '</think>' in content -%}"
    "{%- set thought = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') -%}"
    "{%- set content = content.split('</think>')[-1].lstrip('\n') -%}{%- endif -%}"
    "{%- if loop.index0 > ns.last_user and (loop.last or thought) -%}"
    "{{- '<|im_start|>assistant\n<think>\n' + thought.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') -}}"
    "{%- else -%}{{- '<|im_start|>assistant\n' + content -}}{%- endif -%}"
    "{{- '<|im_end|>\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think>\n\n</think>\n\n' -}}"
    "{%- elif enable_thinking is defined and enable_thinking is true -%}{{- '<think>\n' -}}{%- endif -%}"
    "{%- endif -%}"
)

FAMILY = Family(
    name="4.5",
    display="MiniCPM-V 4.5",
    llm_arch="qwen3",
    llm_qkv_bias=False,
    llm_qk_norm=True,
    tokenizer="bpe",
    tokenizer_pre="qwen2",  # Qwen3 keeps Qwen2's split
    pretokenize_regex=QWEN2_SPLIT,
    add_bos=False,
    permute_qk=False,
    query_num=64,
    projector_type="resampler",
    mmproj_version=6,  # llama.cpp's clip.minicpmv_version for 4.5 (E 4096, 32 heads; the 2.6 graph)
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
    bos_token="<|im_start|>",  # tokenizer_config.json's bos_token (added to nothing; chat() drops it at the start)
    eos_token="<|im_end|>",  # config.json's eos_token_id
    pad_token="<|endoftext|>",
    stop_tokens=("<|im_end|>", "<|endoftext|>"),
    special_tokens=ADDED,
    chat_template=CHAT_TEMPLATE,
    slice_open="<slice>",
    slice_close="</slice>",
    grid_open="",
    grid_close="",
    # chat(): sampling at temperature 0.7, plus top_p 0.8, top_k 100 and repetition penalty 1.03 only when thinking
    # is off (on: transformers' defaults top_k 50, top_p 1.0, no penalty: the LLM's generation config comes from
    # config.json, so generation_config.json is never read); sampling=False: 3 beams, penalty 1.2; enable_thinking
    # always passed to the template (False unless told), and a thinking answer starts with its prompt's "<think>\n"
    chat=ChatDefaults(max_new_tokens=2048,
                      sample=(("temperature", 0.7), ("top_p", 0.8), ("top_k", 100), ("repetition_penalty", 1.03)),
                      enable_thinking=False,
                      thinking_sample=(("temperature", 0.7), ("top_p", 1.0), ("top_k", 50),
                                       ("repetition_penalty", 1.0)),
                      thinking_prefix="<think>\n"),
    clean_up_spaces=False,
    text_drops_pad=False,  # pad is id 0, "!", as 2.6
    plain_tokens=PLAIN,
    resampler_temporal=True,  # the 3-D resampler (video; images as 2.6)
    hf_version=4.5,
    vision_model_type="siglip",
    detects=version_detector(4.5),
    config_hint="config.json 'version' 4.5",
    converter=SiglipConverter(),
    recipe=RECIPE,
    video=VIDEO,  # Video(path): the model card's encode_video, frames packed by their time ids
)
