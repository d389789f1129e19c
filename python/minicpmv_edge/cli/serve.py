"""`minicpmv-edge serve`: the OpenAI-compatible server (server/), with llama-server's flag names."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .model_source import add_model_source_args, model_files

KEY_ENV = "MINICPMV_EDGE_API_KEY"


def add_args(ap: argparse.ArgumentParser) -> None:
    add_model_source_args(ap)
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on")
    ap.add_argument("--port", type=int, default=8080, help="port to listen on")
    ap.add_argument("-np", "--parallel", type=int, default=1,
                    help="conversations served at once (one context of --ctx-size tokens each)")
    ap.add_argument("--queue", type=int, default=64, help="requests that may wait for a slot; more get 503")
    ap.add_argument("--api-key", default=None,
                    help="require 'Authorization: Bearer KEY' on /v1 (visible to other users in `ps`: prefer "
                         f"--api-key-file or the {KEY_ENV} environment variable)")
    ap.add_argument("--api-key-file", default=None, metavar="PATH", help="read the API key from this file")
    ap.add_argument("--allowed-hosts", default="", metavar="NAMES",
                    help="comma-separated Host names this server answers besides IP addresses, localhost and this "
                         "machine's name ('*': any); other names are refused (DNS rebinding)")
    ap.add_argument("--allowed-origins", default="", metavar="ORIGINS",
                    help="comma-separated web page origins (https://app.example) that may call the API from a "
                         "browser, with CORS ('*': any); by default only the server's own chat page")
    ap.add_argument("--header-timeout", type=float, default=10.0,
                    help="seconds a connection has to send a request's headers (idle connections are closed)")
    ap.add_argument("--body-timeout", type=float, default=60.0, help="seconds a request has to send its body")
    ap.add_argument("--alias", default=None,
                    help="the model name /v1/models reports (default: the -hf name, else the file's stem)")
    ap.add_argument("--allow-local-files", default=None, metavar="DIR",
                    help="let image_url / video_url name files under DIR (default: data: URLs only)")
    ap.add_argument("--max-body-mb", type=float, default=64, help="largest request body, MiB (413 beyond)")
    ap.add_argument("-c", "--ctx-size", type=int, default=4096, help="context size per slot")
    ap.add_argument("-t", "--threads", type=int, default=None,
                    help="threads per slot (default: the CPUs this process may use)")
    ap.add_argument("-ngl", "--n-gpu-layers", type=int, default=0,
                    help="language-model layers to offload to the GPU llama.cpp was built for (-1: all)")
    ap.add_argument("--device", default="cpu", help="vision encoder device: cpu, auto or a ggml device name")
    ap.add_argument("--cache-mb", type=int, default=512, help="image embedding cache shared by all slots, MiB")
    ap.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's log lines")


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..server.app import ServerConfig, create_app
        from ..server.protocol import timed_protocol
        from ..server.slots import SlotPool
    except ImportError as e:
        print(f"minicpmv-edge serve needs the server extra: pip install 'minicpmv-edge[server]' ({e})",
              file=sys.stderr)
        return 1
    from ..cache import EmbeddingCache
    from ..llama_adapter import ContextParams
    from ..model import Model

    if args.parallel < 1 or args.queue < 0:
        raise ValueError(f"--parallel must be at least 1 and --queue at least 0 (got {args.parallel}, {args.queue})")
    if not (args.header_timeout > 0 and args.body_timeout > 0):
        raise ValueError("--header-timeout and --body-timeout must be positive")
    api_key = _api_key(args)
    local = Path(args.allow_local_files) if args.allow_local_files else None
    if local is not None and not local.is_dir():
        raise ValueError(f"--allow-local-files {local}: not a directory")
    model_path, mmproj_path = model_files(args)
    model = Model(model_path, mmproj_path, n_threads=args.threads, device=args.device, n_gpu_layers=args.n_gpu_layers,
                  verbose=args.verbose, cache=EmbeddingCache(max_bytes=args.cache_mb << 20))
    try:
        pool = SlotPool(model, ContextParams(n_ctx=args.ctx_size, n_threads=model.n_threads), args.parallel,
                        args.queue)
    except BaseException:
        model.close()
        raise
    try:
        name = args.alias or args.hf_repo or Path(model_path).stem
        cfg = ServerConfig(model_name=name, api_key=api_key, local_dir=local,
                           max_body_bytes=int(args.max_body_mb * (1 << 20)), body_timeout=args.body_timeout,
                           allowed_hosts=_names(args.allowed_hosts), allowed_origins=_names(args.allowed_origins))
        config = uvicorn.Config(create_app(pool, cfg), host=args.host, port=args.port, log_level="info",
                                timeout_graceful_shutdown=5, http=timed_protocol(args.header_timeout))
        server = uvicorn.Server(config)
        server.run()
    finally:
        pool.close()
    return 0


def _names(value: str) -> list[str]:
    return [n.strip() for n in value.split(",") if n.strip()]


def _api_key(args: argparse.Namespace) -> str | None:
    """The key from --api-key, --api-key-file or the environment (at most one of them)."""
    given = {"--api-key": args.api_key, "--api-key-file": args.api_key_file, KEY_ENV: os.environ.get(KEY_ENV)}
    named = [k for k, v in given.items() if v]
    if len(named) > 1:
        raise ValueError(f"the API key is given twice ({' and '.join(named)}); give one")
    if args.api_key_file:
        try:
            key = Path(args.api_key_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"--api-key-file {args.api_key_file}: cannot read it ({e})") from None
        if not key:
            raise ValueError(f"--api-key-file {args.api_key_file}: the file is empty")
        return key
    return args.api_key or os.environ.get(KEY_ENV) or None
