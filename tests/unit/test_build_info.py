"""What the installed build is: `minicpmv-edge info` names the backends in ggml's registry (the ones the installed
llama-cpp-python was built with: CPU always, CUDA / Metal / Vulkan ... when CMAKE_ARGS asked for them), and the
llama-cpp-python we build against is the one we run on (the same pin for the build and at run time)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from helpers import cli

from minicpmv_edge._native import _core

ROOT = Path(__file__).resolve().parents[2]


def test_info_names_the_backends() -> None:
    backends = _core.list_backends()
    assert "CPU" in backends and all(isinstance(b, str) and b for b in backends), backends
    out = subprocess.run([cli(), "info"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("backends: ")]
    assert lines == ["backends: " + ", ".join(backends)], out.stdout
    assert "CPU" in lines[0].removeprefix("backends: ").split(", ")
    # each device belongs to a listed backend's build; the CPU device is always there
    assert any(ln.startswith("device ") and "(cpu)" in ln for ln in out.stdout.splitlines()), out.stdout


def test_one_llama_cpp_python_pin_for_build_and_run() -> None:
    tomllib = pytest.importorskip("tomllib")  # (Python 3.11+)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = [r for r in project["build-system"]["requires"] if r.startswith("llama-cpp-python")]
    assert len(pins) == 1 and pins[0] in project["project"]["dependencies"], pins
    version = pins[0].split("==")[1]
    for script in ("scripts/dev.sh", "scripts/arm64-test.sh", "scripts/pip-install-check.sh"):
        assert re.search(rf"^LCP={re.escape(version)}$", (ROOT / script).read_text(), re.M), script
