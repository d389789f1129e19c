"""`minicpmv-edge demo`, the README's main job, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sysconfig
from pathlib import Path


def test_demo_builds_once_and_generates(tmp_path: Path) -> None:
    exe = str(Path(sysconfig.get_path("scripts")) / "minicpmv-edge")
    env = {**os.environ, "MINICPMV_EDGE_CACHE": str(tmp_path)}
    runs = [subprocess.run([exe, "demo", "-n", "12"], capture_output=True, text=True, env=env, timeout=600)
            for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr[-2000:]
        assert "converted" in r.stderr
    assert runs[0].stdout.strip() != ""
    assert runs[0].stdout == runs[1].stdout  # greedy: the same text both times
    cached = list(tmp_path.glob("tiny-2.6-*/gguf/*.gguf"))
    assert sorted(p.name for p in cached) == ["mmproj-model-f16.gguf", "model-f16.gguf"]
