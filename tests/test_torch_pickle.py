"""convert/torch_pickle.py against torch itself: what torch.save writes, we read without torch (every dtype a
checkpoint holds, views into shared storages, offsets, non-contiguous strides); what we write, torch.load reads
with weights_only=True; and a pickle that would run code is refused without running it."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from minicpmv_edge.convert.safetensors_io import CheckpointError
from minicpmv_edge.convert.torch_pickle import TorchCheckpoint, write_torch_checkpoint


def _saved(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 10, generator=g)
    state = {
        "bf16": torch.randn(3, 5, 7, generator=g).to(torch.bfloat16),
        "f16": torch.randn(33, generator=g).to(torch.float16),
        "f32": base,
        "view_rows": base[2:5],  # shares base's storage, at an offset
        "transposed": base.t(),  # strides (1, 10)
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
        "ints": torch.arange(12, dtype=torch.int64).reshape(3, 4),
        "param": torch.nn.Parameter(torch.ones(2, 2)),
    }
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path)
    return path, state


def test_reads_what_torch_saves(tmp_path: Path) -> None:
    path, state = _saved(tmp_path)
    with TorchCheckpoint(path) as ck:
        assert sorted(ck.keys()) == sorted(state)
        for name, t in state.items():
            want = t.detach().float().numpy() if t.is_floating_point() else t.numpy()
            got = ck.get(name)
            assert ck.shape(name) == tuple(t.shape)
            assert got.shape == want.shape and got.dtype == want.dtype, name
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_torch_loads_what_we_write(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arrays = {"a": rng.standard_normal((4, 9)).astype(np.float32), "b.c": rng.standard_normal(7).astype(np.float32)}
    for dtype, tdtype in (("BF16", torch.bfloat16), ("F16", torch.float16), ("F32", torch.float32)):
        path = tmp_path / f"m-{dtype}.bin"
        write_torch_checkpoint(path, [(k, a.shape, lambda a=a: a) for k, a in arrays.items()], dtype)
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        assert list(loaded) == list(arrays)
        for k, a in arrays.items():
            assert loaded[k].dtype == tdtype
            np.testing.assert_array_equal(loaded[k].float().numpy(), torch.from_numpy(a).to(tdtype).float().numpy())
        with TorchCheckpoint(path) as ck:
            for k in arrays:
                np.testing.assert_array_equal(ck.get(k), loaded[k].float().numpy())


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def _with_pickle(src: Path, dst: Path, data: bytes) -> None:
    """A copy of a torch.save archive whose data.pkl is `data`."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info, data if info.filename.endswith("/data.pkl") else zin.read(info))


def test_a_pickle_that_runs_code_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = _saved(tmp_path)
    bad = tmp_path / "bad.bin"
    _with_pickle(path, bad, pickle.dumps({"w": _Exploit()}, protocol=2))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"names posix\.system.*refusing"):
        TorchCheckpoint(bad)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("cut", [100, 0.5, -8])
def test_a_truncated_or_foreign_file_is_a_clear_error(tmp_path: Path, cut: float) -> None:
    path, _ = _saved(tmp_path)
    data = path.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else cut
    (tmp_path / "cut.bin").write_bytes(data[:n])
    with pytest.raises(CheckpointError, match=r"cut\.bin"):
        TorchCheckpoint(tmp_path / "cut.bin")


def test_the_legacy_format_is_named(tmp_path: Path) -> None:
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf, _use_new_zipfile_serialization=False)
    (tmp_path / "old.bin").write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="legacy"):
        TorchCheckpoint(tmp_path / "old.bin")
