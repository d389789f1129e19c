"""The `minicpmv-edge` command: one entry point, one subcommand per job (llama.cpp-style flags), each in a module of
this package with `add_args(parser)` and `run(args)`."""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from .errors import error_text

# command -> (module of this package, help)
COMMANDS = {
    "demo": ("demo", "ask the bundled trained demo model about a picture (the README's main job)"),
    "run": ("run", "ask about images, streaming the answer"),
    "chat": ("chat", "interactive chat with images"),
    "serve": ("serve", "an OpenAI-compatible server and a chat page"),
    "convert": ("convert", "convert a Hugging Face checkpoint to GGUF"),
    "quantize": ("quantize", "quantize a language-model GGUF with llama.cpp"),
    "slice": ("slice", "show how an image is sliced and what it costs in tokens"),
    "encode": ("encode", "image embeddings of every piece, as .npy"),
    "quantize-mmproj": ("quantize_mmproj", "quantize an mmproj's matrices (q8_0, q4_0)"),
    "make-model": ("make_model", "write a deterministic test checkpoint"),
    "info": ("info", "ggml devices, and a GGUF file's keys"),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="minicpmv-edge", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                 description="MiniCPM-V on CPU/edge, on llama.cpp's ggml")
    ap.add_argument("--version", action="version", version=f"minicpmv-edge {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {}
    for name, (module, help_text) in COMMANDS.items():
        modules[name] = importlib.import_module(f"{__name__}.{module}")
        modules[name].add_args(sub.add_parser(name, help=help_text, description=help_text,
                                              formatter_class=argparse.ArgumentDefaultsHelpFormatter))
    args = ap.parse_args(argv)
    try:
        return modules[args.command].run(args)
    except (ValueError, OSError, MemoryError) as e:  # bad input or too large: one clear line, no traceback
        print(f"minicpmv-edge {args.command}: error: {error_text(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
