"""What a model family is to the rest of the runtime: one frozen row of data (tokens, templates, layout rules,
defaults), and the few stages only some families have, as callables. Code outside families/ reads these fields and
calls these stages; it never asks which family it holds.

Sources (docs/sources.md): the original checkpoints' config and tokenizer files (dimensions, special tokens,
templates), `processing_minicpmv.py` (prompt layout) and llama.cpp's `clip-impl.h` (`clip.minicpmv_version`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class UnsupportedVersionError(ValueError):
    """The checkpoint or GGUF names a MiniCPM-V family this runtime does not handle."""


@dataclass(frozen=True)
class VideoPlan:
    """A video recipe's choice for one clip: the sampled frames and, for a temporal resampler (4.5), their time ids
    in packed groups (chat()'s `temporal_ids`: consecutive frames, `packing` a group, the last group perhaps
    shorter); `groups` None: every frame is an image of its own."""

    frames: list[int]  # indices of the chosen frames in the clip
    packing: int = 1  # frames per group
    groups: list[list[int]] | None = None


class VideoRecipe(Protocol):
    """How a family's original feeds a video: which frames (`plan`: and how they are packed), each sliced how, with
    or without image ids."""

    use_image_id: bool

    def frame_indices(self, n_frames: int, fps: float) -> list[int]: ...

    def plan(self, n_frames: int, fps: float) -> VideoPlan: ...

    def max_slices(self, n_sampled: int) -> int: ...


class VisionBatch(Protocol):
    """A family whose original encodes the prompt's pieces as one padded batch: the length every piece of a call is
    padded to, from the patch counts of all its pieces (0: each piece alone)."""

    def pad_length(self, piece_patches: Sequence[int]) -> int: ...


class AnswerDecode(Protocol):
    """A family whose original decodes the answer differently from the streamed text (SentencePiece's legacy
    spacing): the final text of `tokens`, given the vocabulary's pieces, each token's kind and whether the
    vocabulary's normaliser adds a dummy prefix (which its decoder then takes away)."""

    def __call__(self, tokens: list[int], pieces: Sequence[str], kind: Callable[[int], str],
                 dummy_prefix: bool) -> str: ...


class LayoutConverter(Protocol):
    """A family whose checkpoint layout is not the resampler families' (`vpm.` / `resampler.` / `llm.` in one
    config): the whole conversion's plans and keys. `config(cfg, where)` checks config.json and returns it with the
    keys the rest of the converter reads (`vocab_size`, `_name_or_path`)."""

    def config(self, cfg: dict, where: str) -> dict: ...

    def plan_llm(self, src: Any, cfg: dict, outtype: Any) -> list: ...

    def plan_mmproj(self, src: Any, cfg: dict, pre: dict, outtype: Any) -> list: ...

    def write_llm_kv(self, writer: Any, cfg: dict, file_type: int, name: str, folder: Any) -> None: ...

    def write_mmproj_kv(self, writer: Any, cfg: dict, pre: dict, file_type: int, name: str) -> None: ...


class Converter(Protocol):
    """The family's part of the checkpoint converter: its tower's dimensions and tensor table, language-model keys
    beyond the architecture's own, and resampler tensors derived from stored ones ((original name, GGUF name,
    transform, GGUF shape, original shape), e.g. 1.0's key-position table)."""

    def vision_config(self, cfg: dict, where: str) -> dict: ...

    def vision_table(self, cfg: dict, n_layers: int, width: int) -> list[tuple[str, str, Any, tuple | None]]: ...

    def stored_layer_names(self, n_layers: int, n_stored: int) -> list[str]: ...

    def llm_kv(self, writer: Any, cfg: dict) -> None: ...

    def resampler_table(self, cfg: dict) -> list[tuple[str, str, Any, tuple, tuple]]: ...


@dataclass(frozen=True)
class SpmSettings:
    """What a real SentencePiece `tokenizer.model` holds beyond its learned merges, which the tiny ones copy: its
    user-defined pieces (always whole tokens; ids from 3 on, in this order), the added tokens of
    tokenizer_config.json that take the id of one of those pieces (2.0's `<slice>` on `<reserved_22>`), and its
    normaliser's `add_dummy_prefix`."""

    pieces: tuple[str, ...]
    aliases: tuple[tuple[str, str], ...] = ()  # (added token, the piece whose id it takes)
    dummy_prefix: bool = False


class Recipe(Protocol):
    """The family's deterministic test checkpoints: their presets and the original files' configs and names."""

    presets: dict[str, Any]
    tokenizer_corpus: tuple[str, ...]  # training text beyond the shared corpus (the family's own markup)
    ignore_merges: bool  # BPE: whole words looked up before merging, as the real tokenizer
    nfc: bool  # BPE: an NFC normaliser, as the real tokenizer
    spm: SpmSettings | None  # SentencePiece: the real file's pieces and normaliser

    def configs(self, p: Any, f: Family, ids: dict[str, int], vocab_size: int) -> dict[str, dict[str, object]]: ...

    def vision_shapes(self, p: Any, f: Family) -> list[tuple[str, tuple[int, ...], str]]: ...


# Most originals' chat() settings for each mode (sampling=True, sampling=False: beam search)
SAMPLE_SETTINGS: tuple[tuple[str, float], ...] = (("temperature", 0.7), ("top_p", 0.8), ("top_k", 100),
                                                  ("repetition_penalty", 1.05))
BEAM_SETTINGS: tuple[tuple[str, float], ...] = (("num_beams", 3), ("repetition_penalty", 1.2))
# sampling=False for a family without an original chat(), run by transformers' generate(): do_sample=False with one
# beam is greedy decoding (generation_config's repetition penalty still applies; num_beams may still be given)
GREEDY_SETTINGS: tuple[tuple[str, float], ...] = (("num_beams", 1), ("repetition_penalty", 1.0))


@dataclass(frozen=True)
class ChatDefaults:
    """The original chat()'s generation defaults: the mode `sampling` picks when not given, `max_new_tokens`, and each
    mode's settings (`beam`: sampling=False's, beam search or GREEDY_SETTINGS); a keyword that is not in the active
    mode's settings is ignored, as the original drops it. `skip_special_tokens`: how the original decodes the answer
    when the caller does not say (transformers' post_process_image_text_to_text skips them). A language-model GGUF's
    `minicpmv_edge.generation.*` keys (the checkpoint's generation_config.json) override these settings
    (chat_options.with_generation_config)."""

    max_new_tokens: int
    sampling: bool = True
    sample: tuple[tuple[str, float], ...] = SAMPLE_SETTINGS
    beam: tuple[tuple[str, float], ...] = BEAM_SETTINGS
    skip_special_tokens: bool = False
    # the chat template's enable_thinking as the original chat() passes it when the caller does not (4.5: False;
    # None: not passed); sampling=True's settings when thinking is on (None: `sample`); the text the original
    # prepends to the answer when thinking is on (4.5: the "<think>\n" its prompt ends with)
    enable_thinking: bool | None = None
    thinking_sample: tuple[tuple[str, float], ...] | None = None
    thinking_prefix: str = ""


@dataclass(frozen=True)
class VideoLayout:
    """How a video enters the prompt. `tag` None: as its frames, each an image part of the message of its own (tag,
    image id and separators of an image; 2.6's original passes a video as its frames). Otherwise the message text the
    template sees holds `tag` + `after` once for the whole video, and the video's layout is its frames' image layouts
    (overview and slices, no image id) one after another with `frame_separator` between, after one
    `<image_id>k</image_id>` when image ids are on, k counting the conversation's videos apart from its images (4.6's
    processor numbers each kind on its own)."""

    tag: str | None = None
    after: str = ""
    frame_separator: str = ""
    row_token: str | None = None  # the placeholder token the original writes for its frames' rows (None: images')


@dataclass(frozen=True)
class Family:
    name: str  # the family's short name, as users pick it (`--tiny NAME`, `make-model tiny-NAME`)
    display: str  # model family name as users know it
    llm_arch: str  # llama.cpp architecture of the language model GGUF
    llm_qkv_bias: bool  # the language model's attention has q/k/v biases
    tokenizer: str  # "bpe": byte-level BPE (tokenizer.json); "spm": SentencePiece (tokenizer.model), legacy mode
    tokenizer_pre: str  # llama.cpp pre-tokenizer name (the regex split of the real BPE tokenizer; "" for spm)
    pretokenize_regex: str  # the same split as a `tokenizers` regex, for the tiny checkpoints ("" for spm)
    add_bos: bool  # whether the tokenizer prepends BOS
    permute_qk: bool  # llama.cpp's llama arch uses interleaved RoPE pairs: q/k rows are permuted on conversion
    query_num: int  # resampler queries = LLM tokens per image piece
    projector_type: str  # `clip.projector_type` of its mmproj: llama.cpp's "resampler", or ours
    mmproj_version: int | None  # value of llama.cpp's `clip.minicpmv_version` (None: llama.cpp has no such file)
    position_ids: str | None  # the tower's bucket rule ("navit_2d", "flat_1d"); None: a resampled position grid
    vision_position: str  # "buckets": NaViT ids into the 70x70 table; "resampled_grid": the table resized
    vision_gelu: str  # "tanh" (SigLIP's gelu_pytorch_tanh) or "erf" (timm's nn.GELU)
    resampler_query_pos: bool  # the resampler adds a stored sin-cos table to its queries
    padded_vision_batch: bool  # the original runs the prompt's pieces as one zero-padded batch (vision_batch)
    slicing: str  # "slices": an overview and a grid of slices; "square": the whole image squashed to one square
    resampler_keys: str  # the resampler's key positions: "sincos" of the piece's grid, or "stored" (resized table)
    max_slice_nums: int
    scale_resolution: int
    patch_size: int
    use_image_id: bool  # `<image_id>k</image_id>` before each image
    bos_token: str
    eos_token: str  # config.eos_token_id
    pad_token: str
    stop_tokens: tuple[str, ...]  # generation stops on any of these
    special_tokens: tuple[str, ...]  # added tokens, in id order after the BPE vocabulary
    chat_template: str  # Jinja template as stored in tokenizer_config.json (or the original chat()'s format)
    # prompt layout of one image (the original get_slice_image_placeholder): [<image_id>k</image_id>]
    # overview_open unk*Q overview_close, then if sliced: grid_open, rows joined by "\n" of
    # cols x (slice_open unk*Q slice_close), grid_close
    slice_open: str
    slice_close: str
    grid_open: str
    grid_close: str
    chat: ChatDefaults  # chat()'s generation defaults
    clean_up_spaces: bool  # the tokenizer's clean_up_tokenization_spaces: decode drops the space before , . ? ! 's
    text_drops_pad: bool  # the original deletes generated pad ids from the answer (where pad is not a character)
    penalty_history: tuple[str, ...] = ()  # tokens the repetition penalty counts as generated before the answer
    # SentencePiece byte-fallback tokens (<0xNN>) decode a run at a time, U+FFFD for each byte of a run that is not
    # UTF-8 (transformers' fast Llama tokenizer, 4.0); otherwise a byte stream (invalid bytes replaced, valid ones kept)
    byte_runs: bool = False
    # how an image part enters the message text the chat template sees: the tag, what follows it, and what joins a
    # message's parts (2.6's chat(): "(<image>./</image>)" parts joined by "\n"; 4.6's template: "<|image_pad|>\n"
    # per image item, parts concatenated)
    image_tag: str = "(<image>./</image>)"
    image_after: str = ""
    part_separator: str = "\n"
    # the tokens around an image's (overview's) rows
    image_open: str = "<image>"
    image_close: str = "</image>"
    # a family whose original puts the conversation's image at the start of a message's text, or where that text says
    # this marker (OmniLMM's "<image>", with parse_special=True): the message's images are moved there ("": as given)
    image_marker: str = ""
    plain_tokens: tuple[str, ...] = ()  # added tokens that are not special: whole when encoding, kept by decode
    # the language model normalises each query and key head (RMSNorm, `q_norm` / `k_norm`) before RoPE (Qwen3)
    llm_qk_norm: bool = False
    # the original processor's pixel rules, for mmproj files without `minicpmv_edge.vision.preprocess`: "pil"
    # (Pillow's bicubic, alpha dropped) or "torchvision" (torch's int16-weight bicubic, alpha composited on white)
    preprocess: str = "pil"
    # a merger instead of a resampler (query_num 0): each downsample mode's merge per side ("16x": 4 patches a side
    # per token), which makes a piece's tokens and the slicer's size unit (patch_size x merge); the first is the default
    downsample: tuple[tuple[str, int], ...] = ()
    video_layout: VideoLayout = VideoLayout()  # how a video's frames enter the prompt
    # the resampler's temporal path (4.5's "3-D" resampler: video frames packed by time ids), for mmproj files
    # without `minicpmv_edge.resampler.temporal` (llama.cpp's)
    resampler_temporal: bool = False
    # the placeholder token the original processor writes where an image's embedding rows go (its input_ids)
    row_token: str = "<unk>"
    hf_version: float | str | None = None  # config.json's `version` as the original writes it (None: no key)
    vision_model_type: str = ""  # the tower's `vision_config.model_type` in the original config
    # the stages only some families have, and the family's converter and recipes
    detects: Callable[[dict], bool] = field(default=lambda cfg: False, repr=False, compare=False)
    config_hint: str = field(default="", repr=False, compare=False)  # how detects() knows it, for error messages
    video: VideoRecipe | None = field(default=None, repr=False, compare=False)
    vision_batch: VisionBatch | None = field(default=None, repr=False, compare=False)
    answer_decode: AnswerDecode | None = field(default=None, repr=False, compare=False)
    converter: Converter | None = field(default=None, repr=False, compare=False)
    layout_converter: LayoutConverter | None = field(default=None, repr=False, compare=False)
    recipe: Recipe | None = field(default=None, repr=False, compare=False)

    def merge_of(self, downsample: str | None) -> int:
        """Patches per token side in this downsample mode (None: the default); 1 for a resampler family."""
        if not self.downsample:
            if downsample is not None:
                raise ValueError(f"{self.display} has no downsample mode (a fixed {self.query_num} tokens per piece)")
            return 1
        modes = dict(self.downsample)
        if downsample is None:
            return self.downsample[0][1]
        if downsample not in modes:
            raise ValueError(f"downsample_mode {downsample!r} is not one of {', '.join(modes)}")
        return modes[downsample]

    def piece_tokens(self, width: int, height: int, downsample: str | None = None) -> int:
        """Language-model rows of a width x height piece: query_num, or a merger's one per merge x merge patches."""
        if self.query_num:
            return self.query_num
        side = self.patch_size * self.merge_of(downsample)
        return (width // side) * (height // side)

    @property
    def layout_tokens(self) -> tuple[str, ...]:
        """The special tokens the image layout and the stops need in a vocabulary."""
        ids = ("<image_id>", "</image_id>") if self.use_image_id else ()
        grid = tuple(t for t in (self.slice_open, self.slice_close, self.grid_open, self.grid_close) if t)
        return (self.image_open, self.image_close, *grid, *ids, *self.stop_tokens)


@dataclass(frozen=True)
class Projector:
    """What an mmproj file encodes for: llama.cpp's `clip.projector_type` "resampler" with its
    `clip.minicpmv_version` number (llama.cpp's `clip-impl.h`), or our own projector type."""

    projector_type: str
    number: int | None
    model: str
    position_ids: str | None  # bucket rule: "flat_1d", "navit_2d"; None: resampled grid
    family: Family | None = None  # the family the chat runtime uses with it (None: encoder only)
    padded_batch: bool = False  # for files without `minicpmv_edge.vision.padded_batch` (llama.cpp's)
    temporal: bool = False  # for files without `minicpmv_edge.resampler.temporal` (llama.cpp's)
