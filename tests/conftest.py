"""Shared fixtures: the tiny checkpoints (generated once per session) and their conversions."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/reference as `reference`

from helpers import FAMILY_NAMES

from minicpmv_edge import recipes
from minicpmv_edge.convert import ConvertResult, convert_checkpoint


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {v: recipes.write_checkpoint(f"tiny-{v}", root / f"tiny-{v}") for v in FAMILY_NAMES}


@pytest.fixture(scope="session")
def converted(tiny_hf: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """converted(version, outtype) -> ConvertResult, each conversion done once per session."""
    cache: dict[tuple[str, str], ConvertResult] = {}
    root = tmp_path_factory.mktemp("gguf")

    def get(version: str, outtype: str = "f32") -> ConvertResult:
        if (version, outtype) not in cache:
            cache[version, outtype] = convert_checkpoint(tiny_hf[version], root / version, outtype, progress=False)
        return cache[version, outtype]

    return get


@pytest.fixture(scope="session")
def demo_f16(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The trained demo model (python/minicpmv_edge/data/demo-2.6) as f16 GGUF files."""
    from minicpmv_edge.demo import DEMO_CHECKPOINT

    res = convert_checkpoint(DEMO_CHECKPOINT, tmp_path_factory.mktemp("demo"), "f16", progress=False)
    return res.model, res.mmproj


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`@pytest.mark.arm64(name=value or (values...), ...)` selects a parametrized test for the aarch64 run
    (scripts/dev.sh arm64-test: `-m arm64`) only where its parameters match; several such marks select their union;
    a mark without parameters selects every case."""
    for item in items:
        marks = list(item.iter_markers("arm64"))
        if not marks:
            continue
        params = item.callspec.params if hasattr(item, "callspec") else {}
        if not any(all(params.get(k) in (v if isinstance(v, tuple) else (v,)) for k, v in m.kwargs.items())
                   for m in marks):
            item.own_markers = [m for m in item.own_markers if m.name != "arm64"]
