"""Which model a command loads: local files (-m, --mmproj) or a Hub name (-hf), with llama.cpp's flag names."""

from __future__ import annotations

import argparse


def add_model_source_args(ap: argparse.ArgumentParser) -> None:
    """-m/--mmproj (local files) or -hf (a Hub model), as llama.cpp names them."""
    ap.add_argument("-m", "--model", default=None, help="language model GGUF")
    ap.add_argument("--mmproj", default=None, help="vision encoder GGUF (with -hf: instead of the repository's)")
    ap.add_argument("-hf", "--hf-repo", default=None, metavar="REPO[:QUANT]",
                    help="a model on the Hugging Face Hub, downloaded and cached on first use (HF_HOME, HF_ENDPOINT, "
                         "HF_HUB_OFFLINE, HF_TOKEN apply): a GGUF repository gives QUANT's language model (default "
                         "Q4_K_M) and its mmproj; an original one is converted once (QUANT: f16 (default), q8_0, or "
                         "a llama.cpp type)")


def model_files(args: argparse.Namespace) -> tuple[str, str]:
    """(language model, mmproj) paths from -m/--mmproj or -hf; the only place the command line uses the network."""
    if args.hf_repo is not None:
        if args.model is not None:
            raise ValueError("give either -hf or -m, not both")
        from ..hub import resolve

        files = resolve(args.hf_repo, mmproj=args.mmproj)
        return str(files.model), str(files.mmproj)
    if args.model is None or args.mmproj is None:
        raise ValueError("name the model: -m MODEL.gguf --mmproj MMPROJ.gguf, or -hf REPO[:QUANT]")
    return args.model, args.mmproj
