"""The C++ extension: one ggml in the process, and ggml's gguf parser reached through it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from minicpmv_edge._native import _core

_ONE_GGML = r"""
import sys
sys.path.insert(0, {tests!r})
order = {order!r}
if order == "core-first":
    from minicpmv_edge import _core
    import llama_cpp
else:
    import llama_cpp
    from minicpmv_edge import _core
from reference.mtmd import Mtmd
from pathlib import Path
m = Mtmd(Path({model!r}), Path({mmproj!r}))   # a llama.cpp model and libmtmd, loaded
assert [d.kind for d in _core.list_devices()][0] == "cpu"
info = _core.read_gguf_info({mmproj!r})        # our extension, working
import os
if sys.platform == "linux":  # mapped files (path, inode): /proc/self/maps on Linux; lsof on macOS
    with open("/proc/self/maps") as f:
        fields = [line.split(None, 5) for line in f if "libggml-base" in line]
    maps = [(p[5].strip(), int(p[4])) for p in fields]
else:
    import subprocess
    lsof = subprocess.run(["lsof", "-p", str(os.getpid()), "-Fn"], capture_output=True, text=True).stdout
    maps = [(line[1:], os.stat(line[1:]).st_ino) for line in lsof.splitlines()
            if line.startswith("n") and "libggml-base" in line]
print(sorted(set(maps)))
m.close()
"""

pytestmark = pytest.mark.arm64  # the outcome depends on the CPU or the aarch64 wheels


@pytest.mark.parametrize("order", ["core-first", "llama-first"])
def test_one_ggml_in_the_process(converted, order: str) -> None:
    res = converted("2.6")
    code = _ONE_GGML.format(tests=str(Path(__file__).parent), order=order, model=str(res.model),
                            mmproj=str(res.mmproj))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    maps = eval(out.stdout.strip().splitlines()[-1])
    assert len(maps) == 1, maps  # one file mapped
    import llama_cpp

    # and it is llama_cpp's own copy: the same file (inode; under emulation the maps show host paths), same name
    (path, inode), = maps
    lib = Path(llama_cpp.__file__).parent / "lib"
    assert inode == (lib / Path(path).name).stat().st_ino, (maps, lib)


def test_devices_include_cpu() -> None:
    devs = _core.list_devices()
    assert any(d.kind == "cpu" for d in devs)
    assert all(d.name for d in devs)


@pytest.mark.parametrize("which", ["model", "mmproj"])
def test_gguf_info_agrees_with_gguf_py(converted, which: str) -> None:
    res = converted("2.6", "q8_0")
    path = str(getattr(res, which))
    info = _core.read_gguf_info(path)
    reader = gguf.GGUFReader(path)
    assert [k for k, _ in info.kv] == list(reader.fields.keys())[3:]  # gguf-py lists 3 header fields first
    ours = dict(info.kv)
    for name, field in list(reader.fields.items())[3:]:
        value = field.contents()
        if isinstance(value, float):
            assert ours[name] == pytest.approx(value, rel=1e-6), name
        elif isinstance(value, list) and value and isinstance(value[0], float):
            np.testing.assert_allclose(ours[name], value, rtol=1e-6)
        else:
            assert ours[name] == value, name
    assert [t.name for t in info.tensors] == [t.name for t in reader.tensors]
    for t, r in zip(info.tensors, reader.tensors, strict=True):
        assert t.ne == [int(x) for x in r.shape], t.name
        assert t.type == r.tensor_type.name.lower(), t.name
        assert t.nbytes == r.n_bytes, t.name


def test_gguf_info_rejects_bad_files(converted, tmp_path: Path) -> None:
    src = converted("2.6").mmproj.read_bytes()
    with pytest.raises(ValueError, match="cannot open"):
        _core.read_gguf_info(str(tmp_path / "missing.gguf"))
    (tmp_path / "text.gguf").write_text("not a gguf file at all")
    with pytest.raises(ValueError, match="not a valid GGUF"):
        _core.read_gguf_info(str(tmp_path / "text.gguf"))
    info = _core.read_gguf_info(str(converted("2.6").mmproj))
    header_end = info.data_offset
    cuts = [0, 3, 4, 8, 16, 24, 100, 1000, header_end // 2, header_end - 1, header_end + 10, len(src) - 1]
    for cut in cuts:
        p = tmp_path / f"cut{cut}.gguf"
        p.write_bytes(src[:cut])
        with pytest.raises(ValueError):
            _core.read_gguf_info(str(p))
