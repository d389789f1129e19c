#!/usr/bin/env python3
"""Time to first token and decode speed for one 1344x1344 image on the real-dims MiniCPM-V 2.6 preset: our runtime vs
llama-cpp-python's MiniCPMv26ChatHandler (libmtmd), the same f16 files, in the same run.

    python benchmarks/bench_chat.py [--threads 2] [--tokens 64]

Each engine runs in its own process. Time to first token: from the call to the first generated token (image
decoding, slicing, encoding, prefill included). Decode speed: llama.cpp's own counters of one-token decodes and
their time over the whole call (the generated tokens and any one-token prompt pieces, all against the same
~720-token context), read the same way for both. llama-cpp-python's handler delivers its stream in one burst at
the end, so its chunk times cannot be used, and its time to first token includes the generated tokens (about a
second). Greedy decoding for both, with the stop tokens forbidden so that both produce --tokens tokens (the
weights are random). Ends with one JSON line; "ttft_ratio_vs_llama_cpp_python" is ours / theirs (target <= 0.8),
"decode_ratio" ours / theirs (target >= 0.97).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import subprocess
import sys
import time

import numpy as np
from PIL import Image

QUESTION = "Describe this image in detail."


def data_url(side: int) -> str:
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    rng = np.random.default_rng(1)
    img = np.stack([128 + 100 * np.sin(xx / 37), 128 + 100 * np.cos(yy / 53), 255 * (xx + yy) / (2 * side)], -1)
    arr = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def child(engine: str, model: str, mmproj: str, threads: int, tokens: int) -> dict:
    msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(1344)}},
                                         {"type": "text", "text": QUESTION}]}]
    t_load = time.perf_counter()
    if engine == "ours":
        from minicpmv_edge.chat import MiniCPMV

        m = MiniCPMV(model, mmproj, n_ctx=4096, n_threads=threads)
        load_s = time.perf_counter() - t_load
        for _ in m.chat(msgs, stream=True, temperature=0, max_new_tokens=tokens, min_new_tokens=tokens):
            pass
        ttft = m.last.ttft_ms / 1e3
        perf = m.session.perf()
        extra = {"pieces": m.last.pieces, "prompt_tokens": m.last.prompt_tokens, "encode_s": m.last.encode_ms / 1e3}
    else:
        import llama_cpp
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import MiniCPMv26ChatHandler

        llm = Llama(model_path=model, chat_handler=MiniCPMv26ChatHandler(clip_model_path=mmproj, verbose=False),
                    n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False)
        load_s = time.perf_counter() - t_load
        t0 = time.perf_counter()
        ttft = None
        stops = {llm.tokenize(t.encode(), add_bos=False, special=True)[0] for t in ("<|im_end|>", "<|endoftext|>")}
        for chunk in llm.create_chat_completion(messages=msgs, max_tokens=tokens, temperature=0.0, stream=True,
                                                logit_bias={t: -1e9 for t in stops}):
            if ttft is None and "content" in chunk["choices"][0]["delta"]:  # the first token, text or not yet
                ttft = time.perf_counter() - t0
        p = llama_cpp.llama_perf_context(llm.ctx)
        perf = {"tokens": p.n_eval, "decode_ms": p.t_eval_ms}
        extra = {}
    # decode speed from llama.cpp's own counters (one-token decodes), the same for both
    return {"load_s": load_s, "ttft_s": ttft, "decode_tok_s": perf["tokens"] / (perf["decode_ms"] / 1e3),
            "tokens": perf["tokens"], **extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--child", nargs=3, metavar=("ENGINE", "MODEL", "MMPROJ"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.threads, args.tokens)))
        return

    from minicpmv_edge.demo import ensure_model

    model, mmproj = ensure_model("real-2.6", "f16")
    res = {}
    for engine in ("ours", "llama-cpp-python"):
        r = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--tokens", str(args.tokens),
                            "--child", engine, str(model), str(mmproj)], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"{engine} failed:\n{r.stderr[-3000:]}")
        res[engine] = json.loads(r.stdout.strip().splitlines()[-1])
    o, t = res["ours"], res["llama-cpp-python"]
    print(f"real-dims MiniCPM-V 2.6 (f16), one 1344x1344 image, {args.threads} threads, greedy")
    for name, r in res.items():
        print(f"{name:18s} load {r['load_s']:6.2f} s  time to first token {r['ttft_s']:7.2f} s  "
              f"decode {r['decode_tok_s']:7.1f} tok/s ({r['tokens']} tokens)")
    ttft_ratio, decode_ratio = o["ttft_s"] / t["ttft_s"], o["decode_tok_s"] / t["decode_tok_s"]
    print(f"ours / llama-cpp-python: time to first token {ttft_ratio:.3f}, decode speed {decode_ratio:.3f}")
    print(json.dumps({"bench": "chat", "threads": args.threads, "ours_ttft_s": round(o["ttft_s"], 3),
                      "llama_cpp_python_ttft_s": round(t["ttft_s"], 3),
                      "ours_decode_tok_s": round(o["decode_tok_s"], 2),
                      "llama_cpp_python_decode_tok_s": round(t["decode_tok_s"], 2),
                      "ours_pieces": o["pieces"], "ours_prompt_tokens": o["prompt_tokens"],
                      "ttft_ratio_vs_llama_cpp_python": round(ttft_ratio, 4), "decode_ratio": round(decode_ratio, 4)}))


if __name__ == "__main__":
    main()
