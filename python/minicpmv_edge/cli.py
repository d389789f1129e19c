"""The `minicpmv-edge` command: one entry point, one subcommand per job (llama.cpp-style flags)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from . import __version__


def _make_model_args(ap: argparse.ArgumentParser) -> None:
    from .recipes import PRESETS

    ap.add_argument("preset", choices=sorted(PRESETS), help="which checkpoint to write")
    ap.add_argument("-o", "--out", required=True, help="output folder (replaced if it exists)")


def _make_model(args: argparse.Namespace) -> int:
    from .recipes import write_checkpoint

    print(write_checkpoint(args.preset, args.out))
    return 0


def _info_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("gguf", nargs="?", help="a GGUF file to describe (omit to list devices only)")


def _info(args: argparse.Namespace) -> int:
    from ._native import _core

    print(f"ggml {_core.ggml_commit()}")
    for d in _core.list_devices():
        print(f"device {d.name} ({d.kind}): {d.description}")
    print("cpu features: " + " ".join(n for n, v in _core.cpu_features() if v != "0"))
    if args.gguf:
        info = _core.read_gguf_info(args.gguf)
        print(f"{args.gguf}: GGUF v{info.version}, {len(info.kv)} keys, {len(info.tensors)} tensors")
        for k, v in info.kv:
            text = f"[{len(v)} items]" if isinstance(v, list) and len(v) > 8 else repr(v)
            print(f"  {k} = {text[:200]}")
        if dict(info.kv).get("general.architecture") == "clip":  # how our encoder would run it, chosen at load
            from .encoder import VisionEncoder

            with VisionEncoder(args.gguf) as enc:
                print(f"vision encoder: {enc.native.matmul_summary}")
    return 0


def error_text(e: BaseException) -> str:
    """What an error says (a bare MemoryError says nothing: it is named)."""
    text = str(e)
    if isinstance(e, MemoryError):
        return f"out of memory{': ' + text if text else ''}"
    return text or type(e).__name__


Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def _commands() -> dict[str, Command]:
    from . import demo, encode_cmd, run_cmd, serve_cmd, slice_cmd
    from .convert import cli as conv

    return {
        "demo": ("ask the bundled trained demo model about a picture (the README's main job)", demo.add_args, demo.run),
        "run": ("ask about images, streaming the answer", run_cmd.add_run_args, run_cmd.run),
        "chat": ("interactive chat with images", run_cmd.add_chat_args, run_cmd.chat),
        "serve": ("an OpenAI-compatible server and a chat page", serve_cmd.add_args, serve_cmd.run),
        "convert": ("convert a Hugging Face checkpoint to GGUF", conv.add_convert_args, conv.run_convert),
        "quantize": ("quantize a language-model GGUF with llama.cpp", conv.add_quantize_args, conv.run_quantize),
        "slice": ("show how an image is sliced and what it costs in tokens", slice_cmd.add_args, slice_cmd.run),
        "encode": ("image embeddings of every piece, as .npy", encode_cmd.add_args, encode_cmd.run),
        "quantize-mmproj": ("quantize an mmproj's matrices (q8_0, q4_0)", conv.add_quantize_mmproj_args,
                            conv.run_quantize_mmproj),
        "make-model": ("write a deterministic test checkpoint", _make_model_args, _make_model),
        "info": ("ggml devices, and a GGUF file's keys", _info_args, _info),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="minicpmv-edge", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                 description="MiniCPM-V on CPU/edge, on llama.cpp's ggml")
    ap.add_argument("--version", action="version", version=f"minicpmv-edge {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = _commands()
    for name, (help_text, add, _) in commands.items():
        add(sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter))
    args = ap.parse_args(argv)
    try:
        return commands[args.command][2](args)
    except (ValueError, OSError, MemoryError) as e:  # bad input or too large: one clear line, no traceback
        print(f"minicpmv-edge {args.command}: error: {error_text(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
