"""MiniCPM-V 4.6 (openbmb/MiniCPM-V-4.6; transformers >= 5.7 `minicpmv4_6`, no remote code): a SigLIP2 tower with a
window-attention merger inside it and a 2x2 merger instead of the resampler (cpp/graphs/minicpmv4_6.cpp), and a
Qwen3.5 language model (llama.cpp's `qwen35`: GatedDeltaNet and gated full-attention layers). What differs from 2.6,
all data here: transformers' torchvision preprocessing (int16-weight bicubic, alpha composited on white, sizes in
multiples of 56 or 28), tokens per piece that follow the piece's size (`downsample_mode` "16x" or "4x", per call),
`<|image_pad|>` placeholders written by the chat template, a think block in the generation prompt, and chat()
defaults from the checkpoint's generation_config.json.

Sources (docs/sources.md): transformers 5.23.0 `models/minicpmv4_6/*` and `models/qwen3_5/*`; the released
checkpoint's config.json, preprocessor_config.json, generation_config.json and tokenizer.json; llama.cpp's
`conversion/minicpm.py`, `conversion/qwen.py` and `tools/mtmd/clip.cpp` (its 4.6 mmproj layout)."""

from __future__ import annotations

from ..family import GREEDY_SETTINGS, ChatDefaults, Family, VideoLayout
from ..v2_6 import GROUNDING
from .convert import Converter, detects
from .recipe import RECIPE
from .video import VIDEO

# Qwen3.5's split (tokenizer.json): Qwen2's, with combining marks counted with letters
QWEN35_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# the released tokenizer's added tokens, ids 248044..248093 in this order (tokenizer.json); the ones in PLAIN are
# not special: encoded whole, but kept by decode(skip_special_tokens=True)
ADDED = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
    "<think>", "</think>", "<|audio_start|>", "<|audio_end|>", "<tts_pad>", "<tts_text_bos>", "<tts_text_eod>",
    "<tts_text_bos_single>", "<|audio_pad|>", "<unk>", "<image>", "</image>", *GROUNDING, "<slice>", "</slice>",
    "<image_id>", "</image_id>", "<timestamp>", "</timestamp>",
)
PLAIN = ("<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
         "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>")

# The released chat_template.jinja could not be read (the fact sheet's open item); this is the layout transformers'
# processor is documented to need and third-party ports render: ChatML without a default system prompt, an image
# item as `<|image_pad|>` + "\n" (a video item as `<|video_pad|>` + "\n"), message content trimmed, earlier answers
# without their think part, and the generation prompt's think block: `<think>\n` when enable_thinking is true,
# else an empty one (the Instruct model's default).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set content = message['content'] -%}"
    "{%- else -%}{%- set ns = namespace(text='') -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{%- set ns.text = ns.text + '<|image_pad|>\n' -%}"
    "{%- elif item['type'] == 'video' -%}{%- set ns.text = ns.text + '<|video_pad|>\n' -%}"
    "{%- elif item['type'] == 'text' -%}{%- set ns.text = ns.text + item['text'] -%}{%- endif -%}"
    "{%- endfor -%}{%- set content = ns.text -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' and '</think>' in content -%}"
    "{%- set content = content.split('</think>')[-1] -%}{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' + content | trim + '<|im_end|>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking -%}{{- '<think>\n' -}}"
    "{%- else -%}{{- '<think>\n\n</think>\n\n' -}}{%- endif -%}{%- endif -%}"
)

FAMILY = Family(
    name="4.6",
    display="MiniCPM-V 4.6",
    llm_arch="qwen35",
    llm_qkv_bias=False,
    tokenizer="bpe",
    tokenizer_pre="qwen35",
    pretokenize_regex=QWEN35_SPLIT,
    add_bos=False,
    permute_qk=False,
    query_num=0,  # tokens per piece follow its size (the encoder's piece_tokens)
    projector_type="minicpmv4_6",  # llama.cpp's own projector type: its files and ours are interchangeable
    mmproj_version=None,
    position_ids="nearest_2d",  # transformers' get_vision_nearest_position_ids (float32 bucketize)
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
    bos_token="<|im_start|>",  # generation_config.json's bos_token_id (the tokenizer adds none)
    eos_token="<|endoftext|>",  # config.json's eos_token_id
    pad_token="<|endoftext|>",
    stop_tokens=("<|endoftext|>", "<|im_end|>"),  # generation_config.json's eos_token_id
    special_tokens=ADDED,
    chat_template=CHAT_TEMPLATE,
    slice_open="<slice>",
    slice_close="</slice>",
    grid_open="",
    grid_close="",
    # generation_config.json: sampling at temperature 0.7, top_k off, top_p 1.0, no repetition penalty (a
    # checkpoint's own generation_config.json, carried into the GGUF, overrides these); no chat() of its own:
    # sampling=False is generate(do_sample=False), greedy; the answer as post_process_image_text_to_text gives it
    # (special tokens skipped, the plain <think> / </think> kept; stripped)
    chat=ChatDefaults(max_new_tokens=2048, sample=(("temperature", 0.7), ("top_p", 1.0), ("top_k", 0),
                                                   ("repetition_penalty", 1.0)), beam=GREEDY_SETTINGS,
                      skip_special_tokens=True),
    clean_up_spaces=False,
    text_drops_pad=False,
    image_tag="<|image_pad|>",
    image_after="\n",
    part_separator="",
    plain_tokens=PLAIN,
    preprocess="torchvision",
    downsample=(("16x", 4), ("4x", 2)),
    # the template writes `<|video_pad|>\n` for a video item; the processor puts one image id before the video and
    # each frame's units one after another (video_processing_minicpmv4_6.py, processing_minicpmv4_6.py)
    video_layout=VideoLayout(tag="<|video_pad|>", after="\n", row_token="<|video_pad|>"),
    row_token="<|image_pad|>",
    vision_model_type="minicpmv4_6_vision",
    detects=detects,
    config_hint="config.json 'model_type' minicpmv4_6",
    video=VIDEO,
    layout_converter=Converter(),
    recipe=RECIPE,
)
