"""The bundled demo model and the test checkpoints, converted on first use and cached.

The demo model is a tiny model of the default family the project trained on the synthetic "shapes" task
(tools/train_demo.py; pictures of 1-4 circles, squares and triangles in six colours; questions about shape, colour
and count), shipped as an original-layout checkpoint in `data/demo`. On first use it is converted to GGUF (cached);
then the whole path runs: slicing -> vision encoder -> llama.cpp decoding with the image embeddings -> streamed text.
`minicpmv-edge demo` (cli/demo.py) asks it; `--tiny FAMILY` runs a tiny random-weight model of any family instead.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from . import recipes
from .convert import convert_checkpoint
from .families import FAMILIES
from .shapes_task import Q_COUNT

RECIPE_REVISION = 1  # bump when recipes.py changes what it writes, so cached checkpoints are rebuilt
DATA = Path(__file__).parent / "data"
DEMO_CHECKPOINT = DATA / "demo"
DEMO_IMAGE = DATA / "demo.png"
DEMO_PROMPT = Q_COUNT  # about data/demo.png (shapes_task.demo_item()): "Three."


def cache_dir() -> Path:
    return Path(os.environ.get("MINICPMV_EDGE_CACHE", Path.home() / ".cache" / "minicpmv-edge"))


def _converted(hf: Path, base: Path, outtype: str) -> tuple[Path, Path]:
    gg = base / "gguf"
    model, mmproj = gg / f"model-{outtype}.gguf", gg / f"mmproj-model-{outtype}.gguf"
    if not (model.exists() and mmproj.exists()):
        convert_checkpoint(hf, gg, outtype, progress=False)
    return model, mmproj


def ensure_model(preset: str, outtype: str = "f16", root: Path | None = None) -> tuple[Path, Path]:
    """(model GGUF, mmproj GGUF) of a preset, generated and converted on first use."""
    p = recipes.PRESETS[preset]
    key = hashlib.sha256(repr((RECIPE_REVISION, p, FAMILIES[p.family])).encode()).hexdigest()[:12]
    base = (root or cache_dir()) / f"{preset}-{key}"
    if not (base / "hf" / "config.json").exists():  # (write_checkpoint's folder appears only once complete)
        recipes.write_checkpoint(preset, base / "hf")
    return _converted(base / "hf", base, outtype)


def ensure_demo_model(outtype: str = "f16", root: Path | None = None) -> tuple[Path, Path]:
    """(model GGUF, mmproj GGUF) of the bundled trained checkpoint, converted on first use (keyed by its bytes)."""
    h = hashlib.sha256()
    for f in sorted(DEMO_CHECKPOINT.iterdir()):
        if f.suffix in (".json", ".safetensors"):
            h.update(f.name.encode() + f.read_bytes())
    return _converted(DEMO_CHECKPOINT, (root or cache_dir()) / f"demo-{h.hexdigest()[:12]}", outtype)
