"""Everything that differs between MiniCPM-V versions, as one table of data.

Sources (docs/sources.md): the original checkpoints' config and tokenizer files (dimensions, special tokens,
templates), `processing_minicpmv.py` (prompt layout) and llama.cpp's `clip-impl.h` (`clip.minicpmv_version`).
Code elsewhere reads fields of a `ModelVersion`; it never branches on the version name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelVersion:
    name: str  # "2.6", "2.5", "2.0"
    display: str  # model family name as users know it
    llm_arch: str  # llama.cpp architecture of the language model GGUF
    hf_llm_class: str  # the class that runs the original `llm.*` weights (transformers', or the original's own)
    tokenizer: str  # "bpe": byte-level BPE (tokenizer.json); "spm": SentencePiece (tokenizer.model), legacy mode
    tokenizer_pre: str  # llama.cpp pre-tokenizer name (the regex split of the real BPE tokenizer; "" for spm)
    pretokenize_regex: str  # the same split as a `tokenizers` regex, for the tiny checkpoints ("" for spm)
    add_bos: bool  # whether the tokenizer prepends BOS
    permute_qk: bool  # llama.cpp's llama arch uses interleaved RoPE pairs: q/k rows are permuted on conversion
    query_num: int  # resampler queries = LLM tokens per image piece
    mmproj_version: int | None  # value of llama.cpp's `clip.minicpmv_version` (None: llama.cpp has no such file)
    projector_type: str  # `clip.projector_type` of its mmproj: llama.cpp's "resampler", or ours
    vision_layout: str  # tensor names of the vision tower: "siglip" (HF SigLIP/Idefics2) or "timm"
    vision_position: str  # "buckets": NaViT ids into the 70x70 table; "resampled_grid": the 27x27 table resized
    vision_gelu: str  # "tanh" (SigLIP's gelu_pytorch_tanh) or "erf" (timm's nn.GELU)
    resampler_query_pos: bool  # the resampler adds a stored sin-cos table to its queries (2.0)
    # with `batch_vision_input` the original runs the prompt's pieces as one zero-padded batch whose attention mask
    # has the wrong shape (all true): padding is attended and 1-D positions span the padded length (2.5 only; 2.6
    # masks padding correctly, 2.0 encodes piece by piece)
    padded_vision_batch: bool
    max_slice_nums: int
    scale_resolution: int
    patch_size: int
    use_image_id: bool  # `<image_id>k</image_id>` before each image
    video: bool  # the original has a video recipe (frames as images, image ids off)
    bos_token: str
    eos_token: str  # config.eos_token_id
    pad_token: str
    stop_tokens: tuple[str, ...]  # generation stops on any of these
    special_tokens: tuple[str, ...]  # added tokens, in id order after the BPE vocabulary
    chat_template: str  # Jinja template as stored in tokenizer_config.json (2.0: the original chat()'s format)
    # prompt layout of one image (the original get_slice_image_placeholder): [<image_id>k</image_id>]
    # overview_open unk*Q overview_close, then if sliced: grid_open, rows joined by "\n" of
    # cols x (slice_open unk*Q slice_close), grid_close
    slice_open: str
    slice_close: str
    grid_open: str
    grid_close: str
    max_new_tokens: int  # chat()'s default
    clean_up_spaces: bool  # the tokenizer's clean_up_tokenization_spaces: decode drops the space before , . ? ! 's
    text_drops_pad: bool  # the original deletes generated pad ids from the answer (where pad is not a character)
    penalty_sees_bos: bool  # the repetition penalty's history starts with BOS (transformers 4.36's generate)

    @property
    def layout_tokens(self) -> tuple[str, ...]:
        """The special tokens the image layout and the stops need in a vocabulary."""
        ids = ("<image_id>", "</image_id>") if self.use_image_id else ()
        grid = tuple(t for t in (self.slice_open, self.slice_close, self.grid_open, self.grid_close) if t)
        return ("<image>", "</image>", *grid, *ids, *self.stop_tokens)


_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GROUNDING = ("<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>", "<point>", "</point>")

_CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# MiniCPM-V 2.0's chat() builds its prompt in code: BOS, then `<用户>` + text for user turns and `<AI>` + text for
# assistant turns, with nothing between them, then `<AI>`. There is no system prompt.
_MINICPM2_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('MiniCPM-V 2.0 has no system prompt') }}"
    "{% elif message['role'] == 'user' %}{{ '<用户>' + message['content'] }}"
    "{% else %}{{ '<AI>' + message['content'] }}{% endif %}{% endfor %}{{ '<AI>' }}"
)
_LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
)

VERSIONS: dict[str, ModelVersion] = {
    "2.6": ModelVersion(
        name="2.6",
        display="MiniCPM-V 2.6",
        llm_arch="qwen2",
        hf_llm_class="Qwen2ForCausalLM",
        tokenizer="bpe",
        tokenizer_pre="qwen2",
        pretokenize_regex=_QWEN2_SPLIT,
        add_bos=False,
        permute_qk=False,
        query_num=64,
        mmproj_version=3,
        projector_type="resampler",
        vision_layout="siglip",
        vision_position="buckets",
        vision_gelu="tanh",
        resampler_query_pos=False,
        padded_vision_batch=False,
        max_slice_nums=9,
        scale_resolution=448,
        patch_size=14,
        use_image_id=True,
        video=True,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        stop_tokens=("<|im_end|>", "<|endoftext|>"),
        special_tokens=(
            "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "</image>", *_GROUNDING,
            "<slice>", "</slice>", "<image_id>", "</image_id>",
            *(f"<|reserved_special_token_{i}|>" for i in range(6)), "<unk>",
        ),
        chat_template=_CHATML_TEMPLATE,
        slice_open="<slice>",
        slice_close="</slice>",
        grid_open="",
        grid_close="",
        max_new_tokens=2048,
        clean_up_spaces=False,
        text_drops_pad=False,  # pad is id 0, "!": deleting it would delete real exclamation marks
        penalty_sees_bos=False,
    ),
    "2.5": ModelVersion(
        name="2.5",
        display="MiniCPM-Llama3-V 2.5",
        llm_arch="llama",
        hf_llm_class="LlamaForCausalLM",
        tokenizer="bpe",
        tokenizer_pre="llama-bpe",
        pretokenize_regex=_LLAMA3_SPLIT,
        add_bos=True,
        permute_qk=True,
        query_num=96,
        mmproj_version=2,
        projector_type="resampler",
        vision_layout="siglip",
        vision_position="buckets",
        vision_gelu="tanh",
        resampler_query_pos=False,
        padded_vision_batch=True,
        max_slice_nums=9,
        scale_resolution=448,
        patch_size=14,
        use_image_id=False,
        video=True,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        pad_token="!",
        stop_tokens=("<|eot_id|>", "<|end_of_text|>"),
        special_tokens=(
            "<|begin_of_text|>", "<|end_of_text|>", "<unk>", "<|reserved_special_token_0|>",
            "<|reserved_special_token_1|>", "<|reserved_special_token_2|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|reserved_special_token_3|>", "<|eot_id|>", "<image>", "</image>", *_GROUNDING,
            "<slice>", "</slice>",
        ),
        chat_template=_LLAMA3_TEMPLATE,
        slice_open="<image>",
        slice_close="</image>",
        grid_open="<slice>",
        grid_close="</slice>",
        max_new_tokens=1024,
        clean_up_spaces=True,
        text_drops_pad=False,  # pad is "!" (id 0): kept, as for 2.6
        penalty_sees_bos=False,
    ),
    "2.0": ModelVersion(
        name="2.0",
        display="MiniCPM-V 2.0",
        llm_arch="minicpm",
        hf_llm_class="MiniCPMForCausalLM",  # the original's own modeling_minicpm.py (transformers has none)
        tokenizer="spm",
        tokenizer_pre="",
        pretokenize_regex="",
        add_bos=True,
        permute_qk=True,
        query_num=64,
        mmproj_version=None,
        projector_type="minicpmv-2.0",  # unknown to llama.cpp: it refuses the file instead of misreading it
        vision_layout="timm",
        vision_position="resampled_grid",
        vision_gelu="erf",
        resampler_query_pos=True,
        padded_vision_batch=False,
        max_slice_nums=9,
        scale_resolution=448,
        patch_size=14,
        use_image_id=False,
        video=False,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<unk>",
        stop_tokens=("</s>",),
        special_tokens=("<image>", "</image>", *_GROUNDING, "<slice>", "</slice>"),  # after <unk> <s> </s>
        chat_template=_MINICPM2_TEMPLATE,
        slice_open="<image>",
        slice_close="</image>",
        grid_open="<slice>",
        grid_close="</slice>",
        max_new_tokens=1024,
        clean_up_spaces=False,
        text_drops_pad=True,  # pad is <unk> (id 0): the original deletes it from the answer
        penalty_sees_bos=True,  # transformers 4.36 (the version 2.0 pins) starts input_ids at [BOS]
    ),
}


class UnsupportedVersionError(ValueError):
    """The checkpoint or GGUF names a MiniCPM-V version this runtime does not handle."""


def version_from_config(config: dict[str, object], where: str = "config.json") -> ModelVersion:
    """Resolve the version from an original config.json (`version` is 2.6 as a float, "2.5" as a string; 2.0 has
    no `version` and names its timm vision tower in `vision_encoder`)."""
    if "version" not in config:
        tower = config.get("vision_encoder")
        if isinstance(tower, str) and "siglip" in tower:
            return VERSIONS["2.0"]
        raise UnsupportedVersionError(
            f"{where}: no 'version' key and no timm SigLIP 'vision_encoder': not a MiniCPM-V checkpoint "
            f"(supported: {', '.join(sorted(VERSIONS))})"
        )
    raw = config["version"]
    name = f"{float(raw):.1f}" if isinstance(raw, (int, float, str)) and _is_number(raw) else str(raw)
    if name not in VERSIONS or name == "2.0":
        raise UnsupportedVersionError(
            f"{where}: unknown MiniCPM-V version {raw!r} (supported: {', '.join(sorted(VERSIONS))})"
        )
    return VERSIONS[name]


def _is_number(v: object) -> bool:
    try:
        float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class ProjectorVersion:
    """Which MiniCPM-V an mmproj file encodes for: llama.cpp's `clip.projector_type` "resampler" with its
    `clip.minicpmv_version` number (llama.cpp's `clip-impl.h`), or our own projector type."""

    projector_type: str
    number: int | None
    model: str
    position_ids: str | None  # bucket rule: "flat_1d" (2.5's original quirk), "navit_2d"; None: resampled grid
    chat: str | None = None  # the VERSIONS entry the chat runtime uses with it (None: encoder only)
    # a file without `minicpmv_edge.vision.padded_batch` gets this (llama.cpp's 2.5 files: the released config's
    # batch_vision_input, ModelVersion.padded_vision_batch)
    padded_batch: bool = False


PROJECTORS: dict[tuple[str, int | None], ProjectorVersion] = {(p.projector_type, p.number): p for p in (
    ProjectorVersion("resampler", 2, "MiniCPM-Llama3-V 2.5", "flat_1d", "2.5", padded_batch=True),
    ProjectorVersion("resampler", 3, "MiniCPM-V 2.6", "navit_2d", "2.6"),
    ProjectorVersion("resampler", 4, "MiniCPM-o 2.6", "navit_2d"),
    ProjectorVersion("resampler", 5, "MiniCPM-V 4.0", "navit_2d"),
    ProjectorVersion("resampler", 6, "MiniCPM-V 4.5", "navit_2d"),
    ProjectorVersion(VERSIONS["2.0"].projector_type, None, "MiniCPM-V 2.0", None, "2.0"),
)}
DEFAULT_PROJECTOR = 2  # llama.cpp resampler files without the version key are 2.5 files (llama.cpp's rule)


def projector_version(projector_type: str, number: int | None, where: str = "mmproj") -> ProjectorVersion:
    if projector_type == "resampler" and number is None:
        number = DEFAULT_PROJECTOR
    key = (projector_type, number)
    if key not in PROJECTORS:
        known = ", ".join(f"{t} {n}" if n is not None else t for t, n in PROJECTORS)
        raise UnsupportedVersionError(
            f"{where}: projector {projector_type!r} version {number} is not a supported MiniCPM-V "
            f"(supported: {known})")
    return PROJECTORS[key]
