#!/usr/bin/env python3
"""Serving speed: `minicpmv-edge serve` against `python -m llama_cpp.server` (llama-cpp-python's own server, its
MiniCPMv26ChatHandler: llama.cpp's libmtmd) on the same files and the same requests, in the same run.

    python benchmarks/bench_server.py [--clients 1,4,16] [--requests 3] [--parallel 4] [--threads 2]
                                      [-m MODEL.gguf --mmproj MMPROJ.gguf]

Each of C concurrent clients (threads with the official `openai` client) sends R streamed requests, each a
different picture of the demo task with its question (greedy, at most 16 new tokens): no picture is sent twice, so
our embedding cache gives us nothing here. Time to first token (TTFT) is from sending the request to the first
content chunk; "correct" is the share of exact task answers (both servers should agree). llama_cpp.server runs one
request at a time; it is started with `--interrupt_requests False`, since by default a new request cuts the running
one short (that answer comes back empty). Default files: the trained demo model (f16). Needs llama-cpp-python's
server extras (`pip install sse-starlette starlette-context pydantic-settings`). Prints a table and ends with one
JSON line holding, per server and client count, requests/s and TTFT p50/p95, and
"ttft_p50_ratio_vs_llama_cpp_server" at 4 clients (ours / theirs; below 1 is faster).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai

from minicpmv_edge.demo import ensure_demo_model
from minicpmv_edge.shapes_task import dataset

SEED = 7100
MAX_TOKENS = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{cmd[:4]} exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"{cmd[:4]} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.3)


def requests_for(n: int) -> list[tuple[list[dict], str]]:
    """n single-picture questions (each a fresh picture), OpenAI messages and the expected answer."""
    out = []
    for it in dataset(SEED, 4 * n):
        if len(it.pictures) != 1 or len(it.messages) != 1:
            continue
        parts = []
        for c in it.messages[0]["content"]:
            if isinstance(c, str):
                parts.append({"type": "text", "text": c})
            else:
                buf = io.BytesIO()
                c.save(buf, "PNG")
                parts.append({"type": "image_url", "image_url": {
                    "url": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()}})
        out.append(([{"role": "user", "content": parts}], it.answer))
        if len(out) == n:
            break
    return out


def measure(url: str, clients: int, per_client: int, reqs: list) -> dict:
    """`clients` threads, each sending its `per_client` requests of `reqs` one after another."""
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
    ttfts: list[float] = []
    right = [0]
    lock = threading.Lock()

    def one(c: int) -> None:
        for r in range(per_client):
            msgs, want = reqs[c * per_client + r]
            t0 = time.perf_counter()
            first, text = None, []
            for chunk in client.chat.completions.create(model="m", messages=msgs, stream=True, temperature=0,
                                                        max_tokens=MAX_TOKENS):
                for ch in chunk.choices:
                    if ch.delta.content:
                        first = first or time.perf_counter()
                        text.append(ch.delta.content)
            with lock:
                ttfts.append(((first or time.perf_counter()) - t0) * 1e3)
                right[0] += "".join(text).strip() == want

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(clients)))
    wall = time.perf_counter() - t0
    client.close()
    n = clients * per_client
    return {"requests": n, "requests_per_s": n / wall, "ttft_p50_ms": float(np.percentile(ttfts, 50)),
            "ttft_p95_ms": float(np.percentile(ttfts, 95)), "correct": right[0] / n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default=None)
    ap.add_argument("--mmproj", default=None)
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--requests", type=int, default=3, help="requests per client")
    ap.add_argument("--parallel", type=int, default=4, help="our server's slots")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=4096)
    args = ap.parse_args()
    model, mmproj = (args.model, args.mmproj) if args.model else ensure_demo_model("f16")
    levels = [int(c) for c in args.clients.split(",")]
    reqs = requests_for(1 + sum(levels) * args.requests)
    starts = {c: 1 + sum(levels[:i]) * args.requests for i, c in enumerate(levels)}  # no picture sent twice
    exe = Path(sys.executable)
    servers = {
        "minicpmv-edge": lambda p: [str(exe.with_name("minicpmv-edge")), "serve", "-m", str(model), "--mmproj",
                                    str(mmproj), "--port", str(p), "--parallel", str(args.parallel), "-t",
                                    str(args.threads), "-c", str(args.ctx), "--queue", "256"],
        "llama_cpp.server": lambda p: [str(exe), "-m", "llama_cpp.server", "--model", str(model), "--clip_model_path",
                                       str(mmproj), "--chat_format", "minicpm-v-2.6", "--port", str(p), "--n_ctx",
                                       str(args.ctx), "--n_threads", str(args.threads), "--verbose", "False",
                                       "--interrupt_requests", "False"],  # queue, not cut the running answer
    }
    results: dict[str, dict[int, dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd in servers.items():
            port = free_port()
            proc = start(cmd(port), port, Path(tmp) / f"{name}.log")
            try:
                measure(f"http://127.0.0.1:{port}", 1, 1, reqs)  # warm-up
                results[name] = {c: measure(f"http://127.0.0.1:{port}", c, args.requests, reqs[starts[c]:])
                                 for c in levels}
            finally:
                proc.terminate()
                proc.wait(30)
    print(f"{'server':18} {'clients':>7} {'req/s':>7} {'TTFT p50 ms':>12} {'TTFT p95 ms':>12} {'correct':>8}")
    for name, per in results.items():
        for c, r in per.items():
            print(f"{name:18} {c:7d} {r['requests_per_s']:7.2f} {r['ttft_p50_ms']:12.1f} {r['ttft_p95_ms']:12.1f} "
                  f"{r['correct']:8.2f}")
    ours, theirs = results["minicpmv-edge"], results["llama_cpp.server"]
    ratios = {c: ours[c]["ttft_p50_ms"] / theirs[c]["ttft_p50_ms"] for c in levels}
    for c in levels:
        print(f"{c} clients: TTFT p50 ours/theirs {ratios[c]:.2f}, requests/s ours/theirs "
              f"{ours[c]['requests_per_s'] / theirs[c]['requests_per_s']:.2f}")
    line = {"bench": "server", "model": str(model), "parallel": args.parallel, "threads": args.threads,
            "results": {n: {str(c): r for c, r in per.items()} for n, per in results.items()},
            "ttft_p50_ratio_vs_llama_cpp_server": ratios.get(4)}
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
