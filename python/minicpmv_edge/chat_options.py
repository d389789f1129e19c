"""chat()'s keywords as checked configuration: the original `model.chat()` defaults (the original
`modeling_minicpmv.py` `chat()`) and a clear error for every value of the wrong type or out of range, before any
native code runs."""

from __future__ import annotations

import math
import numbers
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from .families.family import BEAM_SETTINGS, SAMPLE_SETTINGS, ChatDefaults

MAX_BEAMS = 8  # sequences a context is created for (twice this, plus the prompt's): see generate.py
DOWNSAMPLE_MODES = ("16x", "4x")  # MiniCPM-V 4.6's merger: tokens per piece are its patches / 16 or / 4

# Most originals' chat(): sampling=True uses the first set, sampling=False (beam search) the second; a keyword that
# is not in the active set is ignored, as the original silently drops it. A family may say otherwise (ChatDefaults).
SAMPLING_DEFAULTS = dict(SAMPLE_SETTINGS)
BEAM_DEFAULTS = dict(BEAM_SETTINGS)


def check_int(name: str, value: object, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        bound = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise ValueError(f"{name} must be {bound}, got {v}")
    return v


def check_float(name: str, value: object, lo: float, hi: float | None = None, *, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < lo or (lo_open and v == lo) or (hi is not None and v > hi):
        low = f"more than {lo}" if lo_open else f"at least {lo}"
        raise ValueError(f"{name} must be a finite number {low}" + (f" and at most {hi}" if hi is not None else "")
                         + f", got {value!r}")
    return v


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {type(value).__name__}")
    return value


@dataclass(frozen=True)
class GenerationParams:
    """How tokens are chosen. `sampling=False` is the original's beam search (num_beams, repetition_penalty; one
    beam: greedy); otherwise temperature (0 = greedy), top-k (0 = off), top-p, repetition penalty and seed."""

    max_new_tokens: int
    min_new_tokens: int = 0
    sampling: bool = True
    temperature: float = SAMPLING_DEFAULTS["temperature"]
    top_p: float = SAMPLING_DEFAULTS["top_p"]
    top_k: int = int(SAMPLING_DEFAULTS["top_k"])
    repetition_penalty: float = SAMPLING_DEFAULTS["repetition_penalty"]
    num_beams: int = int(BEAM_DEFAULTS["num_beams"])
    seed: int = 0
    skip_special_tokens: bool = False
    stop: tuple[str, ...] = ()  # the answer ends before the first of these strings (finish_reason "stop")
    prefix: str = ""  # text the answer starts with, before the generated tokens' (4.5 thinking: "<think>\n")

    def __post_init__(self) -> None:
        if not isinstance(self.stop, tuple) or not all(isinstance(s, str) and s for s in self.stop):
            raise TypeError("stop must be a sequence of non-empty strings")
        check_int("max_new_tokens", self.max_new_tokens, 1)
        check_int("min_new_tokens", self.min_new_tokens, 0)
        check_bool("sampling", self.sampling)
        check_float("temperature", self.temperature, 0.0)
        check_float("top_p", self.top_p, 0.0, 1.0, lo_open=True)
        check_int("top_k", self.top_k, 0)
        check_float("repetition_penalty", self.repetition_penalty, 0.0, lo_open=True)
        check_int("num_beams", self.num_beams, 1, MAX_BEAMS)
        check_int("seed", self.seed, 0)
        check_bool("skip_special_tokens", self.skip_special_tokens)


@dataclass(frozen=True)
class PromptParams:
    """How the conversation becomes a prompt: system prompt, slicing, image ids, special strings in text, the image
    tokens per piece (`downsample_mode`, encoders with a choice: MiniCPM-V 4.6) and the chat template's
    `enable_thinking` (passed to the template only when given)."""

    system_prompt: str = ""
    max_slice_nums: int | None = None  # None: the model's default (9)
    use_image_id: bool | None = None  # None: the model's default (its family's; off for a video recipe)
    parse_special: bool = False  # True: special-token strings typed in messages become control tokens
    downsample_mode: str | None = None  # "16x" or "4x"; None: the mmproj's default (media.Media.downsample_mode)
    enable_thinking: bool | None = None  # None: the template's own default
    # 4.5's packed frames: the time ids of the conversation's images in groups (check_temporal_ids); None: none
    temporal_ids: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.system_prompt, str):
            raise TypeError(f"system_prompt must be a string, not {type(self.system_prompt).__name__}")
        if self.max_slice_nums is not None:
            check_int("max_slice_nums", self.max_slice_nums, 1)
        if self.use_image_id is not None:
            check_bool("use_image_id", self.use_image_id)
        check_bool("parse_special", self.parse_special)
        if self.downsample_mode is not None and (not isinstance(self.downsample_mode, str)
                                                 or self.downsample_mode not in DOWNSAMPLE_MODES):
            raise ValueError(f"downsample_mode must be one of {', '.join(map(repr, DOWNSAMPLE_MODES))} (or None: the "
                             f"model's default), not {self.downsample_mode!r}")
        if self.enable_thinking is not None:
            check_bool("enable_thinking", self.enable_thinking)
        if self.temporal_ids is not None:
            object.__setattr__(self, "temporal_ids", check_temporal_ids(self.temporal_ids))

    @property
    def template_kwargs(self) -> dict[str, object]:
        """What the chat template gets beyond the messages: only what the caller gave."""
        return {} if self.enable_thinking is None else {"enable_thinking": self.enable_thinking}


INT32_MAX = (1 << 31) - 1  # time ids are int32, as the original's recipe makes them


def check_temporal_ids(value: object) -> tuple[tuple[int, ...], ...]:
    """chat()'s `temporal_ids` as the original takes them: a list of groups (lists or numpy arrays) of integer time
    ids (-1: none; at most int32's largest), one group per packed set of consecutive images; TypeError / ValueError
    naming what is wrong."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"temporal_ids must be a list of groups of integer time ids (e.g. [[0, 3, 7], [10, 13]]), "
                        f"not {type(value).__name__}")
    groups = []
    for g, group in enumerate(value):  # type: ignore[attr-defined]
        if isinstance(group, (str, bytes)) or not hasattr(group, "__iter__"):
            raise TypeError(f"temporal_ids[{g}] must be a group (a list) of integer time ids, not "
                            f"{type(group).__name__} (a flat list is one group: wrap it, [[...]])")
        ids = tuple(check_int(f"temporal_ids[{g}][{i}]", t, -1, INT32_MAX) for i, t in enumerate(group))
        if not ids:
            raise ValueError(f"temporal_ids[{g}] is an empty group (each group holds at least one image's id)")
        groups.append(ids)
    if not groups:
        raise ValueError("temporal_ids is empty (None: no packed frames)")
    return tuple(groups)


def with_generation_config(defaults: ChatDefaults, generation: Mapping[str, float | bool]) -> ChatDefaults:
    """The family's chat() defaults with a checkpoint's generation_config.json settings (llm_file.LlmFile.generation)
    in their place: `do_sample` picks the default mode; temperature, top_p, top_k and repetition_penalty replace the
    sampling mode's, and repetition_penalty the other mode's where that mode is greedy decoding (one beam: what
    transformers' generate() runs with do_sample=False, penalty included); a beam search keeps its own settings (an
    original chat()'s, which override generation_config)."""
    if not generation:
        return defaults
    sample = dict(defaults.sample)
    sample.update({k: v for k, v in generation.items() if k in ("temperature", "top_p", "top_k", "repetition_penalty")})
    beam = dict(defaults.beam)
    if beam.get("num_beams", 1) == 1 and "repetition_penalty" in beam and "repetition_penalty" in generation:
        beam["repetition_penalty"] = generation["repetition_penalty"]
    sampling = generation.get("do_sample", defaults.sampling)
    return replace(defaults, sampling=bool(sampling), sample=tuple(sample.items()),  # type: ignore[arg-type]
                   beam=tuple(beam.items()))  # type: ignore[arg-type]


def chat_params(defaults: ChatDefaults, *, max_new_tokens: int | None = None, min_new_tokens: int = 0,
                sampling: bool | None = None, stream: bool = False, temperature: float | None = None,
                top_p: float | None = None, top_k: int | None = None, repetition_penalty: float | None = None,
                num_beams: int | None = None, seed: int | None = None, system_prompt: str = "",
                max_slice_nums: int | None = None, use_image_id: bool | None = None,
                skip_special_tokens: bool | None = None, parse_special: bool = False, stop: Sequence[str] | str = (),
                downsample_mode: str | None = None, enable_thinking: bool | None = None,
                temporal_ids: object = None) -> tuple[GenerationParams, PromptParams]:
    """chat()'s keywords, checked, with the model's defaults for the mode (`sampling`; None: the model's default
    mode, or sampling for a `stream` where sampling=False is beam search, which cannot stream); a keyword that the
    mode's settings do not have is ignored, as the original ignores it. `seed` None: a random one;
    `skip_special_tokens` None: as the family's original decodes its answer."""
    if sampling is None:
        sampling = True if stream and dict(defaults.beam).get("num_beams", 1) != 1 else defaults.sampling
    check_bool("sampling", sampling)
    if enable_thinking is None:
        enable_thinking = defaults.enable_thinking  # what the original chat() passes when not told
    thinking = enable_thinking is not None and check_bool("enable_thinking", enable_thinking)
    sample = defaults.thinking_sample if thinking and defaults.thinking_sample is not None else defaults.sample
    mode = dict(sample if sampling else defaults.beam)

    def pick(name: str, given: float | None, off: float) -> float:
        """The given value where the mode has the setting, else the mode's default, else `off`."""
        return mode.get(name, off) if given is None or name not in mode else given

    if isinstance(stop, str):
        stop = (stop,)
    if not isinstance(stop, Sequence):
        raise TypeError(f"stop must be a string or a sequence of strings, not {type(stop).__name__}")
    gp = GenerationParams(
        max_new_tokens=defaults.max_new_tokens if max_new_tokens is None else max_new_tokens,
        min_new_tokens=min_new_tokens, sampling=sampling, temperature=pick("temperature", temperature, 0.0),
        top_p=pick("top_p", top_p, 1.0), top_k=pick("top_k", top_k, 0),  # type: ignore[arg-type]
        repetition_penalty=pick("repetition_penalty", repetition_penalty, 1.0),
        num_beams=pick("num_beams", num_beams, 1),  # type: ignore[arg-type]
        seed=secrets.randbits(32) if seed is None else seed,
        skip_special_tokens=defaults.skip_special_tokens if skip_special_tokens is None else skip_special_tokens,
        stop=tuple(stop), prefix=defaults.thinking_prefix if thinking else "")
    pp = PromptParams(system_prompt=system_prompt, max_slice_nums=max_slice_nums, use_image_id=use_image_id,
                      parse_special=parse_special, downsample_mode=downsample_mode, enable_thinking=enable_thinking,
                      temporal_ids=temporal_ids)  # type: ignore[arg-type]
    return gp, pp
