"""The `run` / `chat` flags that reach chat() (cli/common.py), without a model: the per-call prompt switches
(`--downsample-mode`, `--enable-thinking` / `--no-enable-thinking`) and sampling flags that default to the model's
own settings (None), not to one family's numbers."""

from __future__ import annotations

import argparse

import pytest

from minicpmv_edge.cli import common, run


class Recorder:
    """A stand-in for MiniCPMV: records chat()'s keywords, streams one piece."""

    def __init__(self) -> None:
        self.kwargs: dict = {}

    def chat(self, msgs: list[dict], **kw) -> list[str]:
        self.kwargs = kw
        return ["ok"]

    @property
    def last(self) -> argparse.Namespace:
        return argparse.Namespace(summary=lambda: "")


def _args(*flags: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    run.add_args(ap)
    return ap.parse_args(["-m", "m.gguf", "--mmproj", "p.gguf", "-p", "Hi", *flags])


@pytest.mark.parametrize(("flags", "want"), [
    ((), {"downsample_mode": None, "enable_thinking": None, "temperature": None, "top_p": None, "top_k": None,
          "repetition_penalty": None}),
    (("--downsample-mode", "4x", "--enable-thinking"), {"downsample_mode": "4x", "enable_thinking": True}),
    (("--downsample-mode", "16x", "--no-enable-thinking", "--temp", "0", "--top-k", "0"),
     {"downsample_mode": "16x", "enable_thinking": False, "temperature": 0.0, "top_k": 0}),
])
def test_flags_reach_chat(flags: tuple, want: dict, capsys: pytest.CaptureFixture) -> None:
    m = Recorder()
    assert common.answer(m, [{"role": "user", "content": "Hi"}], _args(*flags)) == "ok"  # type: ignore[arg-type]
    assert {k: m.kwargs[k] for k in want} == want


def test_a_bad_downsample_mode_is_refused(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        _args("--downsample-mode", "8x")
    assert "invalid choice: '8x'" in capsys.readouterr().err
