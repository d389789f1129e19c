"""The model families this runtime knows, one folder each (see docs/adding-a-family.md), and the one place that
tells which family a checkpoint or a pair of GGUF files belongs to.

A family folder holds all that is particular to it: its data row (tokens, templates, layout rules, defaults), its
part of the converter, its test checkpoints, and any stage only it has. Everything outside families/ reads the
fields of a `Family` and calls its stages; nothing there asks which family it holds.
"""

from __future__ import annotations

from . import omnilmm, v1_0, v2_0, v2_5, v2_6, v4_0, v4_5, v4_6
from .family import Family, Projector, UnsupportedVersionError
from .presets import Preset

FAMILIES: dict[str, Family] = {f.name: f for f in (v4_6.FAMILY, v4_5.FAMILY, v4_0.FAMILY, v2_6.FAMILY,
                                                  v2_5.FAMILY, v2_0.FAMILY, v1_0.FAMILY, omnilmm.FAMILY)}
DEFAULT = v2_6.FAMILY.name  # what tools that need some family (`slice`, benchmarks) count in by default

# mmproj files our encoder runs: each family's, and llama.cpp's resampler versions of models that have no family
# here yet (the encoder runs them; chat does not)
PROJECTORS: dict[tuple[str, int | None], Projector] = {(p.projector_type, p.number): p for p in (
    *(Projector(f.projector_type, f.mmproj_version, f.display, f.position_ids, f, f.padded_vision_batch,
                f.resampler_temporal)
      for f in FAMILIES.values()),
    Projector("resampler", 4, "MiniCPM-o 2.6", "navit_2d"),
)}
DEFAULT_PROJECTOR = 2  # llama.cpp resampler files without the version key are version-2 files (llama.cpp's rule)
PRESETS: dict[str, Preset] = {k: p for f in FAMILIES.values() if f.recipe for k, p in f.recipe.presets.items()}

__all__ = ["DEFAULT", "FAMILIES", "PRESETS", "PROJECTORS", "Family", "Preset", "Projector",
           "UnsupportedVersionError", "detect_hf", "detect_mmproj", "family_of_files", "llm_architectures"]


def detect_hf(config: dict, where: str = "config.json") -> Family:
    """The family of an original checkpoint's config.json (each family says how it knows its own)."""
    found = [f for f in FAMILIES.values() if f.detects(config)]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise UnsupportedVersionError(f"{where}: matches {' and '.join(f.display for f in found)} (name the family: "
                                      "convert --family)")
    supported = ", ".join(sorted(FAMILIES))
    if "version" in config:
        raise UnsupportedVersionError(f"{where}: unknown MiniCPM-V version {config['version']!r} "
                                      f"(supported: {supported})")
    hints = "; ".join(f"{f.display}: {f.config_hint}" for f in FAMILIES.values() if f.hf_version is None)
    raise UnsupportedVersionError(f"{where}: no 'version' key and nothing else that names a family ({hints}): not a "
                                  f"MiniCPM-V checkpoint this runtime knows (supported: {supported}; or name the "
                                  "family: convert --family)")


def projector(projector_type: str, number: int | None, where: str = "mmproj") -> Projector:
    if projector_type == "resampler" and number is None:
        number = DEFAULT_PROJECTOR
    key = (projector_type, number)
    if key not in PROJECTORS:
        known = ", ".join(f"{t} {n}" if n is not None else t for t, n in PROJECTORS)
        raise UnsupportedVersionError(f"{where}: projector {projector_type!r} version {number} is not a supported "
                                      f"MiniCPM-V (supported: {known})")
    return PROJECTORS[key]


def detect_mmproj(kv: dict, where: str) -> Projector:
    """What an mmproj file's keys say it encodes for (ValueError for a file that is not a MiniCPM-V mmproj)."""
    if kv.get("general.architecture") != "clip":
        raise ValueError(f"{where}: general.architecture is {kv.get('general.architecture')!r}, not 'clip' "
                         "(not an mmproj file)")
    ptype = kv.get("clip.projector_type")
    if ptype is None and kv.get("clip.has_minicpmv_projector") is True:
        ptype = "resampler"  # llama.cpp's older files
    value = kv.get("clip.minicpmv_version")
    number = int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return projector(str(ptype), number, where)


def family_of_files(proj: Projector, llm_arch: str, mmproj_path: object, model_path: object) -> Family:
    """The family of a language-model GGUF and an mmproj that go together (ValueError if they do not)."""
    f = proj.family
    if f is None:
        raise UnsupportedVersionError(f"{mmproj_path}: {proj.model} is supported by the encoder only, not chat")
    if llm_arch != f.llm_arch:
        raise ValueError(f"{model_path}: architecture {llm_arch!r} does not go with {mmproj_path} "
                         f"({f.display} needs {f.llm_arch!r})")
    return f


def llm_architectures() -> tuple[str, ...]:
    """The language-model architectures some family uses."""
    return tuple(sorted({f.llm_arch for f in FAMILIES.values()}))
