"""MiniCPM-V 2.6 (openbmb/MiniCPM-V-2_6): SigLIP-400M (NaViT position buckets) + resampler + Qwen2-7B, image ids,
and the original video recipe."""

from __future__ import annotations

from ..common.siglip import SiglipConverter
from ..common.versioned import VersionedRecipe, version_detector
from ..family import ChatDefaults, Family
from ..presets import Preset
from .video import RECIPE

QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
GROUNDING = ("<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>", "<point>", "</point>")
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# the demo task's words (shapes_task.py), so that its answers are a few whole-word tokens, not spelt out
SHAPES_WORDS = ("What shape is in the image? A red circle. A green square. A blue triangle. A yellow circle.",
                "What color is the square? Purple. Orange. An orange square. A purple triangle. Red. Green. Blue.",
                "How many shapes are there? One. Two. Three. Four. Which image has more shapes?",
                "The first image. The second image. Describe the image. Yellow. Two shapes: a red circle, a blue "
                "square. One shape: a green triangle. Three shapes: a yellow square, an orange circle, a purple "
                "triangle. Four shapes:")

PRESETS = {
    # vision FFN 200 is, like SigLIP's 4304, not a multiple of 32 (quantization blocks)
    "tiny-2.6": Preset("2.6", 96, 2, 3, 200, 256, 2, 4, 2, 512, 1024, "BF16"),
    # the starting point of the trained demo model (tools/train_demo.py): 32 queries per piece
    "demo-2.6": Preset("2.6", 64, 2, 2, 128, 256, 2, 4, 2, 768, 1024, "BF16", seed=11, query_num=32,
                       corpus=SHAPES_WORDS),
    # the real MiniCPM-V 2.6 vision tower and resampler (1152 wide, 27 layers, 64 x 3584), with a small LLM
    "real-2.6": Preset("2.6", 1152, 27, 16, 4304, 3584, 2, 28, 4, 4864, 1024, "BF16"),
}

FAMILY = Family(
    name="2.6",
    display="MiniCPM-V 2.6",
    llm_arch="qwen2",
    llm_qkv_bias=True,
    tokenizer="bpe",
    tokenizer_pre="qwen2",
    pretokenize_regex=QWEN2_SPLIT,
    add_bos=False,
    permute_qk=False,
    query_num=64,
    projector_type="resampler",
    mmproj_version=3,
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
    bos_token="<|endoftext|>",
    eos_token="<|im_end|>",
    pad_token="<|endoftext|>",
    stop_tokens=("<|im_end|>", "<|endoftext|>"),
    special_tokens=(
        "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "</image>", *GROUNDING,
        "<slice>", "</slice>", "<image_id>", "</image_id>",
        *(f"<|reserved_special_token_{i}|>" for i in range(6)), "<unk>",
    ),
    chat_template=CHATML_TEMPLATE,
    slice_open="<slice>",
    slice_close="</slice>",
    grid_open="",
    grid_close="",
    chat=ChatDefaults(max_new_tokens=2048),
    clean_up_spaces=False,
    text_drops_pad=False,  # pad is id 0, "!": deleting it would delete real exclamation marks
    hf_version=2.6,
    vision_model_type="siglip",
    detects=version_detector(2.6),
    config_hint="config.json 'version' 2.6",
    video=RECIPE,
    converter=SiglipConverter(),
    recipe=VersionedRecipe(PRESETS, {"rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 32768,
                                     "use_sliding_window": False, "sliding_window": 131072, "max_window_layers": 0,
                                     "attention_dropout": 0.0}, nfc=True),
)
