"""Which family a config.json or an mmproj belongs to (the registry's one place), with the facts the originals and
llama.cpp's `clip-impl.h` give: 2.6 writes `version` 2.6 (a float), 2.5 writes "2.5" (a string), 2.0 and 1.0 write
none and name their timm tower, and only 2.0 has slicing keys; llama.cpp's `clip.minicpmv_version` is 2 for 2.5, 3
for 2.6, and absent in its older 2.5 files."""

from __future__ import annotations

import pytest

from minicpmv_edge.families import (
    FAMILIES,
    PRESETS,
    UnsupportedVersionError,
    detect_hf,
    detect_mmproj,
    family_of_files,
)


@pytest.mark.parametrize(("config", "name"), [
    ({"version": 2.6}, "2.6"),
    ({"version": "2.6"}, "2.6"),
    ({"version": "2.5"}, "2.5"),
    ({"version": 4.5}, "4.5"),  # MiniCPM-V 4.5 (its config.json: a float)
    ({"version": 2.5}, "2.5"),
    ({"version": 4.0}, "4.0"),  # MiniCPM-V 4.0 (fact sheet §1: vLLM asserts version (4, 0))
    ({"version": "4.0"}, "4.0"),
    # 2.0's config has the slicing keys (slice_mode, max_slice_nums), 1.0's has none: their tensors are the same
    ({"vision_encoder": "vit_so400m_patch14_siglip_384.webli", "query_num": 64, "slice_mode": True}, "2.0"),
    ({"vision_encoder": "vit_so400m_patch14_siglip_384.webli", "max_slice_nums": 9}, "2.0"),
    ({"vision_encoder": "vit_so400m_patch14_siglip_384.webli", "query_num": 64, "image_size": 448}, "1.0"),
])
def test_configs_name_their_family(config: dict, name: str) -> None:
    assert detect_hf(config).name == name


@pytest.mark.parametrize(("config", "words"), [
    ({"version": 3.7}, "unknown MiniCPM-V version 3.7"),
    ({"version": True}, "unknown MiniCPM-V version True"),
    ({"version": "2.6-beta"}, "unknown MiniCPM-V version '2.6-beta'"),
    ({"vision_encoder": "eva02_enormous"}, "no 'version' key and nothing else that names a family"),
    ({}, "not a MiniCPM-V checkpoint this runtime knows"),
])
def test_other_configs_are_refused(config: dict, words: str) -> None:
    with pytest.raises(UnsupportedVersionError, match=words):
        detect_hf(config, "x/config.json")


def _mmproj(**kv) -> dict:
    return {"general.architecture": "clip", **kv}


@pytest.mark.parametrize(("kv", "name", "rule", "padded"), [
    (_mmproj(**{"clip.projector_type": "resampler", "clip.minicpmv_version": 3}), "2.6", "navit_2d", False),
    (_mmproj(**{"clip.projector_type": "resampler", "clip.minicpmv_version": 2}), "2.5", "flat_1d", True),
    (_mmproj(**{"clip.projector_type": "resampler", "clip.minicpmv_version": 6}), "4.5", "navit_2d", False),
    (_mmproj(**{"clip.projector_type": "resampler", "clip.minicpmv_version": 5}), "4.0", "navit_2d", False),
    (_mmproj(**{"clip.has_minicpmv_projector": True}), "2.5", "flat_1d", True),  # llama.cpp's older files
    (_mmproj(**{"clip.projector_type": "minicpmv-2.0"}), "2.0", None, False),
    (_mmproj(**{"clip.projector_type": "minicpmv-1.0"}), "1.0", None, False),
])
def test_mmproj_files_name_their_family(kv: dict, name: str, rule: str | None, padded: bool) -> None:
    p = detect_mmproj(kv, "m.gguf")
    assert p.family is not None and p.family.name == name
    assert (p.position_ids, p.padded_batch) == (rule, padded)


def test_encoder_only_and_foreign_mmproj_files() -> None:
    p = detect_mmproj(_mmproj(**{"clip.projector_type": "resampler", "clip.minicpmv_version": 4}), "m.gguf")
    assert p.family is None and p.model == "MiniCPM-o 2.6"
    with pytest.raises(UnsupportedVersionError, match=r"MiniCPM-o 2\.6 is supported by the encoder only"):
        family_of_files(p, "qwen2", "m.gguf", "l.gguf")
    with pytest.raises(UnsupportedVersionError, match="projector 'mlp' version None is not a supported MiniCPM-V"):
        detect_mmproj(_mmproj(**{"clip.projector_type": "mlp"}), "m.gguf")
    with pytest.raises(ValueError, match="not 'clip'"):
        detect_mmproj({"general.architecture": "llama"}, "m.gguf")
    p26 = detect_mmproj(_mmproj(**{"clip.projector_type": "resampler", "clip.minicpmv_version": 3}), "m.gguf")
    with pytest.raises(ValueError, match=r"architecture 'llama' does not go with m\.gguf"):
        family_of_files(p26, "llama", "m.gguf", "l.gguf")


def test_each_family_detects_its_own_recipe_config() -> None:
    """A family's test checkpoints carry the config its original writes, and only that family claims it."""
    for f in FAMILIES.values():
        assert f.recipe is not None and (f.converter is not None or f.layout_converter is not None)
        for name, preset in f.recipe.presets.items():
            assert preset.family == f.name and PRESETS[name] is preset
            ids = {t: i for i, t in enumerate((f.bos_token, f.eos_token, f.pad_token, "<unk>", *f.special_tokens,
                                               *f.stop_tokens))}
            cfg = f.recipe.configs(preset, f, ids, 1000)["config.json"]
            assert detect_hf(cfg) is f, (f.name, name)


def test_layout_tokens_are_special_tokens() -> None:
    """Every token a family's image layout or stop needs is one of its special tokens (or its BOS/EOS)."""
    for f in FAMILIES.values():
        known = {*f.special_tokens, f.bos_token, f.eos_token, f.pad_token}
        assert set(f.layout_tokens) <= known, f.name
