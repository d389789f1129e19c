"""OmniLMM-12B (openbmb/OmniLMM-12B, the original code in OpenBMB/MiniCPM-V's `omnilmm/` and `chat.py`): timm's
EVA02-CLIP-E/14+ tower (63 residual post-norm blocks, a class token, exact GELU) on one 448 x 448 square per image,
a 256-query resampler (stored key and query tables), and Zephyr-7B-beta, which llama.cpp runs as `llama` (Mistral).

All of it is data here but the converter (convert.py: the checkpoint's own layout, read from its torch pickle without
running code) and the tower's graph (cpp/graphs/eva.cpp, chosen by the mmproj key `minicpmv_edge.vision.tower`):
the prompt is the original's fixed system sentence in Zephyr's markup, the image as `<im_start>` + 256 `<im_patch>`
rows + `<im_end>` + "\\n" at the start of its message (where the text says `<image>` with parse_special=True);
the original's only decoding mode is sampling (temperature 0.6, top-k 30, top-p 0.9, repetition penalty 1.1 over
the generated tokens, 1024 new tokens); the answer is the fast tokenizer's decode with special tokens skipped."""

from __future__ import annotations

from ..family import GREEDY_SETTINGS, ChatDefaults, Family
from .convert import Converter, detects
from .recipe import Recipe

SYSTEM = ("You are an artificial intelligence assistant, which gives helpful, detailed, and polite answers to the "
          "human's questions.")
ADDED = ("<im_patch>", "<im_start>", "<im_end>", "<box>", "</box>", "<ref>", "</ref>", "<quad>", "</quad>")

# The BOS the tokenizer's encode() adds, then the system message the original inserts itself and the conversation
# in Zephyr's template (turns "<|role|>\n" + content + "</s>\n", then "<|assistant|>\n"); a caller cannot give a
# system prompt.
TEMPLATE = ("{{ bos_token }}{{ \"<|system|>\\n" + SYSTEM + "\" + eos_token + \"\\n\" }}"
            "{% for message in messages %}"
            "{% if message['role'] == 'system' %}"
            "{{ raise_exception('OmniLMM-12B has a fixed system prompt; it takes no system message') }}"
            "{% endif %}"
            "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")

FAMILY = Family(
    name="omnilmm",
    display="OmniLMM-12B",
    llm_arch="llama",
    llm_qkv_bias=False,
    tokenizer="spm",
    tokenizer_pre="",
    pretokenize_regex="",
    add_bos=True,
    permute_qk=True,
    query_num=256,
    projector_type="omnilmm",  # unknown to llama.cpp: it refuses the file instead of misreading it
    mmproj_version=None,
    position_ids=None,
    vision_position="resampled_grid",  # the converter stores the table at the square's grid already
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
    pad_token="</s>",
    stop_tokens=("</s>",),
    special_tokens=ADDED,  # ids 32000 .. 32008, after Mistral's 32000 pieces
    chat_template=TEMPLATE,
    slice_open="",
    slice_close="",
    grid_open="",
    grid_close="",
    chat=ChatDefaults(max_new_tokens=1024, sampling=True,
                      sample=(("temperature", 0.6), ("top_k", 30), ("top_p", 0.9), ("repetition_penalty", 1.1)),
                      beam=GREEDY_SETTINGS,  # no greedy mode in the original: do_sample=False, no penalty
                      skip_special_tokens=True),
    clean_up_spaces=False,
    text_drops_pad=False,
    penalty_history=("<s>",),  # transformers 4.36 starts input_ids at [BOS] when generating from embeddings
    byte_runs=True,  # transformers' fast Llama tokenizer (converted from tokenizer.model): a byte run at a time
    image_tag="<image>",
    image_after="\n",
    part_separator="\n",
    image_open="<im_start>",
    image_close="<im_end>",
    image_marker="<image>",
    row_token="<im_patch>",
    detects=detects,
    config_hint="config.json 'model_type' omnilmm",
    layout_converter=Converter(),
    recipe=Recipe(),
)
