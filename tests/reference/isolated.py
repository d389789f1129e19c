"""A reference function run in a process of its own, under the transformers release an original pins when the test
extra's cannot stand in for it (MiniCPM-V 1.0 and 2.0 pin 4.36, whose generate() starts from a dummy BOS that its
repetition penalty counts, and whose slow tokenizer decodes as the original does; MiniCPM-V 4.6 is native in
5.23). That release lives in a folder of
its own (`scripts/dev.sh test` installs it: transformers and tokenizers only, the rest shared with the test
environment) put first on the child's path. Arguments and results travel pickled over the pipes."""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
TRANSFORMERS_4_36 = Path(os.environ.get("MINICPMV_EDGE_TF436", Path(sys.prefix) / "ref" / "transformers-4.36"))
# MiniCPM-V 4.6 is native in transformers 5.23, whose tokenizers and huggingface_hub the test extra's 4.46 cannot share
TRANSFORMERS_5_23 = Path(os.environ.get("MINICPMV_EDGE_TF523", Path(sys.prefix) / "ref" / "transformers-5.23"))
# MiniCPM-V 4.5's Qwen3 needs transformers >= 4.51 (its config.json records 4.51.0): tokenizers 0.21, the rest shared
TRANSFORMERS_4_51 = Path(os.environ.get("MINICPMV_EDGE_TF451", Path(sys.prefix) / "ref" / "transformers-4.51"))


def call(func: str, *args, env: Path = TRANSFORMERS_4_36, version: str = "4.36.0", timeout: float = 900, **kwargs):
    """`module:function`(*args, **kwargs) in a child whose `transformers` is the one installed in `env`."""
    if not (env / "transformers").is_dir():
        raise RuntimeError(f"{env}: transformers {version} is not installed there (scripts/dev.sh test installs it; "
                           "MINICPMV_EDGE_TF436 / MINICPMV_EDGE_TF523 name another folder)")
    child_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(env), str(TESTS)])}
    p = subprocess.run([sys.executable, "-m", "reference.isolated"], input=pickle.dumps((version, func, args, kwargs)),
                       capture_output=True, env=child_env, cwd=TESTS, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{func} under transformers {version} failed:\n{p.stderr.decode(errors='replace')[-4000:]}")
    return pickle.loads(p.stdout)


def _main() -> None:
    version, func, args, kwargs = pickle.loads(sys.stdin.buffer.read())
    import transformers

    if transformers.__version__ != version:
        raise SystemExit(f"expected transformers {version}, found {transformers.__version__} at "
                         f"{transformers.__file__}")
    out, sys.stdout = sys.stdout.buffer, sys.stderr  # anything the reference prints goes to stderr
    module, name = func.split(":")
    result = getattr(importlib.import_module(module), name)(*args, **kwargs)
    out.write(pickle.dumps(result))
    out.flush()


if __name__ == "__main__":
    _main()
