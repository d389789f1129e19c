"""llama.cpp's own converter (`convert_hf_to_gguf.py` of the llama.cpp that llama-cpp-python 0.3.36 vendors; its
sdist's `convert_hf_to_gguf.py`, `conversion/` and `gguf-py/`, which `scripts/dev.sh test` unpacks into
`.venv/ref/llama.cpp-0.3.36`), run in a child process: the "llama.cpp-made files" a user downloads.

Two things in that release need help on a tiny test checkpoint, and only those are changed, here and not in its
files: its pre-tokenizer check knows real vocabularies by hash, so the tiny one is named `qwen35` (the real one's
pre-tokenizer); and in text mode its MiniCPM-V 4.6 class does not drop the merger's `model.merger.*` tensors (it fails
with "Can not map tensor 'model.merger.mlp.0.linear_1.bias'"), so they are dropped as that class means to."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

LLAMA_CPP = Path(os.environ.get("MINICPMV_EDGE_LLAMACPP_CONVERTER", Path(sys.prefix) / "ref" / "llama.cpp-0.3.36"))


def convert(hf_dir: Path, out: Path, *args: str, timeout: float = 600, pre: str = "qwen35") -> Path:
    """`convert_hf_to_gguf.py hf_dir --outfile out ARGS` (e.g. "--mmproj", "--no-mtp", "--outtype f32"); `pre`: the
    real vocabulary's pre-tokenizer name, which the tiny one is given ("qwen2" for MiniCPM-V 4.5's Qwen3)."""
    if not (LLAMA_CPP / "convert_hf_to_gguf.py").is_file():
        raise RuntimeError(f"{LLAMA_CPP}: llama.cpp's converter is not there (scripts/dev.sh test unpacks it; "
                           "MINICPMV_EDGE_LLAMACPP_CONVERTER names another folder)")
    from .isolated import TRANSFORMERS_5_23  # its tokenizer loading needs the transformers 4.6 came with

    out.parent.mkdir(parents=True, exist_ok=True)

    tests = Path(__file__).parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TRANSFORMERS_5_23), str(tests)]), "LLAMACPP_PRE": pre}
    p = subprocess.run([sys.executable, "-m", "reference.llamacpp_convert", str(LLAMA_CPP), str(hf_dir),
                        "--outfile", str(out), *args], capture_output=True, text=True, timeout=timeout,
                       cwd=tests, env=env)
    if p.returncode != 0 or not out.exists():
        raise RuntimeError(f"llama.cpp's converter failed:\n{p.stderr[-4000:]}")
    return out


def _main() -> None:
    root = sys.argv.pop(1)
    sys.path[:0] = [os.path.join(root, "gguf-py"), root]
    import conversion.base as base

    pre = os.environ.get("LLAMACPP_PRE", "qwen35")
    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
    modify = base.ModelBase.modify_tensors

    def without_merger(self, data, name, bid):
        return iter(()) if name.startswith("model.merger.") and not isinstance(self, base.MmprojModel) else \
            modify(self, data, name, bid)

    base.ModelBase.modify_tensors = without_merger
    sys.argv[0] = os.path.join(root, "convert_hf_to_gguf.py")
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    _main()
