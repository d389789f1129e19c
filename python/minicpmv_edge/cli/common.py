"""What `run` and `chat` share: the model's flags, loading it, and answering one conversation as a stream."""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from ..chat import MiniCPMV
from ..chat_options import DOWNSAMPLE_MODES
from .model_source import add_model_source_args, model_files


def add_model_args(ap: argparse.ArgumentParser) -> None:
    add_model_source_args(ap)
    ap.add_argument("-n", "--n-predict", type=int, default=None, help="max new tokens (default: the model's, 2048)")
    ap.add_argument("-c", "--ctx-size", type=int, default=4096, help="context size")
    ap.add_argument("-t", "--threads", type=int, default=None,
                    help="threads (default: the CPUs this process may use: affinity and cgroup quota)")
    ap.add_argument("--temp", type=float, default=None,
                    help="temperature, 0 = greedy (default: the model's: its generation_config, else the original "
                         "chat()'s 0.7)")
    ap.add_argument("--top-p", type=float, default=None, help="top-p (default: the model's, e.g. 0.8)")
    ap.add_argument("--top-k", type=int, default=None, help="top-k, 0 = off (default: the model's, e.g. 100)")
    ap.add_argument("--repeat-penalty", type=float, default=None,
                    help="repetition penalty (default: the model's, e.g. 1.05)")
    ap.add_argument("--seed", type=int, default=None, help="sampling seed (default: random)")
    ap.add_argument("--max-slices", type=int, default=None, help="max_slice_nums (default: 9)")
    ap.add_argument("--downsample-mode", choices=DOWNSAMPLE_MODES, default=None,
                    help="image tokens per piece for a model whose encoder has the choice (MiniCPM-V 4.6): 16x or "
                         "4x fewer than patches (default: the mmproj's)")
    ap.add_argument("--enable-thinking", action=argparse.BooleanOptionalAction, default=None,
                    help="the chat template's enable_thinking (MiniCPM-V 4.6: think before answering; default: the "
                         "template's, no thinking)")
    ap.add_argument("--system", default="", help="system prompt")
    ap.add_argument("-ngl", "--n-gpu-layers", type=int, default=0,
                    help="language-model layers to offload to the GPU llama.cpp was built for (-1: all)")
    ap.add_argument("--device", default="cpu", help="vision encoder device: cpu, auto or a ggml device name")
    ap.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's log lines")


def load(args: argparse.Namespace) -> MiniCPMV:
    model, mmproj = model_files(args)
    return MiniCPMV(model, mmproj, n_ctx=args.ctx_size, n_threads=args.threads, device=args.device,
                    n_gpu_layers=args.n_gpu_layers, verbose=args.verbose)


def answer(m: MiniCPMV, msgs: list[dict], args: argparse.Namespace) -> str:
    bar = tqdm(unit="piece", desc="encoding", file=sys.stderr, leave=False, disable=None)
    pieces = m.chat(msgs, stream=True, max_new_tokens=args.n_predict, temperature=args.temp, top_p=args.top_p,
                    top_k=args.top_k, repetition_penalty=args.repeat_penalty, seed=args.seed,
                    system_prompt=args.system, max_slice_nums=args.max_slices, progress=bar.update,
                    downsample_mode=args.downsample_mode, enable_thinking=args.enable_thinking)
    bar.close()
    out = []
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
        out.append(piece)
    sys.stdout.write("\n")
    print(m.last.summary(), file=sys.stderr)
    return "".join(out).strip()
