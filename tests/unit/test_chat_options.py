"""chat()'s per-call options and defaults without a model (chat_options.py): the checkpoint's generation_config
over the family's defaults, greedy decoding as 4.6's sampling=False, the answer's special tokens as the family's
original decodes them, and the prompt switches (downsample_mode, enable_thinking) checked before any native code."""

from __future__ import annotations

import pytest

from minicpmv_edge.chat_options import PromptParams, chat_params, with_generation_config
from minicpmv_edge.families import FAMILIES


def test_generation_config_replaces_the_family_defaults() -> None:
    """4.6 has no chat(): generate() reads generation_config.json, which the GGUF carries."""
    base = FAMILIES["4.6"].chat
    d = with_generation_config(base, {"do_sample": False, "temperature": 0.6, "top_p": 0.9, "top_k": 20,
                                      "repetition_penalty": 1.1})
    assert d.sampling is False and d.max_new_tokens == base.max_new_tokens
    assert dict(d.sample) == {"temperature": 0.6, "top_p": 0.9, "top_k": 20, "repetition_penalty": 1.1}
    assert dict(d.beam) == {"num_beams": 1, "repetition_penalty": 1.1}  # greedy generate() applies the penalty too
    gp, _ = chat_params(d, seed=1)
    assert (gp.sampling, gp.num_beams, gp.repetition_penalty) == (False, 1, 1.1)
    gp, _ = chat_params(d, sampling=True, seed=1)
    assert (gp.temperature, gp.top_p, gp.top_k) == (0.6, 0.9, 20)
    assert with_generation_config(base, {}) is base
    # a beam search keeps the original chat()'s own settings
    beam = with_generation_config(FAMILIES["2.6"].chat, {"repetition_penalty": 1.0})
    assert dict(beam.beam) == {"num_beams": 3, "repetition_penalty": 1.2}


def test_4_6_sampling_false_is_greedy_and_may_stream() -> None:
    d = FAMILIES["4.6"].chat
    gp, _ = chat_params(d, sampling=False, temperature=0.9, seed=1)
    assert (gp.sampling, gp.num_beams, gp.repetition_penalty) == (False, 1, 1.0)
    gp, _ = chat_params(d, sampling=False, num_beams=3, seed=1)  # generate(num_beams=3): beam search, if asked
    assert gp.num_beams == 3
    gp, _ = chat_params(d, stream=True, seed=1)
    assert gp.sampling  # the default mode (generation_config's do_sample)
    gp, _ = chat_params(d, sampling=True, seed=1)
    assert (gp.temperature, gp.top_p, gp.top_k, gp.repetition_penalty) == (0.7, 1.0, 0, 1.0)  # top_k 0: off


@pytest.mark.parametrize(("name", "skip"), [("4.6", True), ("2.6", False), ("2.0", False)])
def test_special_tokens_are_decoded_as_the_original_does(name: str, skip: bool) -> None:
    """4.6: post_process_image_text_to_text skips special tokens; the others' chat() keeps them."""
    d = FAMILIES[name].chat
    assert chat_params(d, seed=1)[0].skip_special_tokens is skip
    assert chat_params(d, skip_special_tokens=not skip, seed=1)[0].skip_special_tokens is (not skip)


def test_prompt_switches_are_checked() -> None:
    d = FAMILIES["4.6"].chat
    _, pp = chat_params(d, downsample_mode="4x", enable_thinking=True, seed=1)
    assert pp.downsample_mode == "4x" and pp.template_kwargs == {"enable_thinking": True}
    _, pp = chat_params(d, seed=1)
    assert pp.downsample_mode is None and pp.template_kwargs == {}  # nothing reaches the template unless given
    assert PromptParams(enable_thinking=False).template_kwargs == {"enable_thinking": False}
    with pytest.raises(ValueError, match="downsample_mode must be one of '16x', '4x'"):
        chat_params(d, downsample_mode="8x", seed=1)
    with pytest.raises(ValueError, match="downsample_mode must be one of"):
        chat_params(d, downsample_mode=4, seed=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="enable_thinking must be True or False"):
        chat_params(d, enable_thinking="yes", seed=1)  # type: ignore[arg-type]


def test_omnilmm_defaults_are_the_originals_only_mode() -> None:
    """OmniLMM-12B's chat() samples only (temperature 0.6, top_k 30, top_p 0.9, repetition penalty 1.1, 1024 new
    tokens) and decodes with skip_special_tokens=True; sampling=False is greedy without the penalty."""
    d = FAMILIES["omnilmm"].chat
    gp, _ = chat_params(d, seed=1)
    assert gp.sampling and (gp.temperature, gp.top_k, gp.top_p, gp.repetition_penalty) == (0.6, 30, 0.9, 1.1)
    assert gp.max_new_tokens == 1024 and gp.skip_special_tokens is True
    gp, _ = chat_params(d, sampling=False, seed=1)
    assert (gp.sampling, gp.num_beams, gp.repetition_penalty) == (False, 1, 1.0)
