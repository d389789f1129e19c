#!/usr/bin/env python3
"""A second question about the same picture: time to first token of turn 1 and turn 2 (which repeats turn 1
and its answer as history) for one 1344x1344 image on the real-dims MiniCPM-V 2.6 preset. Ours reuses the image
embeddings (cache) and the KV cache of the common prefix; llama-cpp-python's MiniCPMv26ChatHandler re-encodes and
re-prefills everything, shown side by side from the same files in the same run. Then the first turn again with
q8_0 files on both sides (language model and mmproj: ours on our int8 kernels, the handler on libmtmd's).

    python benchmarks/bench_turns.py [--threads 2]

Ends with one JSON line; "second_over_first" is our turn-2 / turn-1 time to first token (target <= 0.05);
"ttft_q8_ratio_vs_handler" our first-turn time to first token / the handler's, q8_0 files on both sides.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from bench_chat import data_url

Q1, Q2 = "Describe this image in detail.", "What is in the top left corner?"


def child(engine: str, model: str, mmproj: str, threads: int, turns: int = 2) -> dict:
    img = {"type": "image_url", "image_url": {"url": data_url(1344)}}
    turn1 = [{"role": "user", "content": [img, {"type": "text", "text": Q1}]}]
    if engine == "ours":
        from minicpmv_edge.chat import MiniCPMV

        m = MiniCPMV(model, mmproj, n_ctx=4096, n_threads=threads)

        def ask(msgs: list[dict]) -> tuple[float, str]:
            answer = m.chat(msgs, temperature=0, max_new_tokens=16, min_new_tokens=16)
            return m.last.ttft_ms / 1e3, answer
    else:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import MiniCPMv26ChatHandler

        llm = Llama(model_path=model, chat_handler=MiniCPMv26ChatHandler(clip_model_path=mmproj, verbose=False),
                    n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False)
        stops = {llm.tokenize(t.encode(), add_bos=False, special=True)[0] for t in ("<|im_end|>", "<|endoftext|>")}

        def ask(msgs: list[dict]) -> tuple[float, str]:
            t0, ttft, text = time.perf_counter(), None, []
            for chunk in llm.create_chat_completion(messages=msgs, max_tokens=16, temperature=0.0, stream=True,
                                                    logit_bias={t: -1e9 for t in stops}):
                delta = chunk["choices"][0]["delta"]
                if ttft is None and "content" in delta:
                    ttft = time.perf_counter() - t0
                text.append(delta.get("content") or "")
            return ttft or 0.0, "".join(text)
    t1, a1 = ask(turn1)
    if turns == 1:
        return {"turn1_ttft_s": t1}
    t2, _ = ask([*turn1, {"role": "assistant", "content": a1}, {"role": "user", "content": Q2}])
    return {"turn1_ttft_s": t1, "turn2_ttft_s": t2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", nargs=3, metavar=("ENGINE", "MODEL", "MMPROJ"), help=argparse.SUPPRESS)
    ap.add_argument("--turns", type=int, default=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.threads, args.turns)))
        return

    from minicpmv_edge.demo import ensure_model

    def run(engine: str, model, mmproj, turns: int) -> dict:
        r = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--turns", str(turns),
                            "--child", engine, str(model), str(mmproj)], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"{engine} failed:\n{r.stderr[-3000:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    model, mmproj = ensure_model("real-2.6", "f16")
    res = {engine: run(engine, model, mmproj, 2) for engine in ("ours", "llama-cpp-python")}
    model8, mmproj8 = ensure_model("real-2.6", "q8_0")
    q8 = {engine: run(engine, model8, mmproj8, 1)["turn1_ttft_s"] for engine in ("ours", "llama-cpp-python")}
    print(f"real-dims MiniCPM-V 2.6 (f16), one 1344x1344 image, two turns, {args.threads} threads")
    for name, r in res.items():
        print(f"{name:18s} turn 1: {r['turn1_ttft_s']:7.2f} s   turn 2: {r['turn2_ttft_s']:7.2f} s   "
              f"turn 2 / turn 1: {r['turn2_ttft_s'] / r['turn1_ttft_s']:.4f}")
    print(f"q8_0 files ({model8.name}, {mmproj8.name}), turn 1: ours {q8['ours']:7.2f} s, llama-cpp-python "
          f"{q8['llama-cpp-python']:7.2f} s, ratio {q8['ours'] / q8['llama-cpp-python']:.3f}")
    o, t = res["ours"], res["llama-cpp-python"]
    print(json.dumps({"bench": "turns", "threads": args.threads, "ours_turn1_s": round(o["turn1_ttft_s"], 3),
                      "ours_turn2_s": round(o["turn2_ttft_s"], 3),
                      "llama_cpp_python_turn1_s": round(t["turn1_ttft_s"], 3),
                      "llama_cpp_python_turn2_s": round(t["turn2_ttft_s"], 3),
                      "second_over_first": round(o["turn2_ttft_s"] / o["turn1_ttft_s"], 4),
                      "llama_cpp_python_second_over_first": round(t["turn2_ttft_s"] / t["turn1_ttft_s"], 4),
                      "ours_q8_turn1_s": round(q8["ours"], 3),
                      "llama_cpp_python_q8_turn1_s": round(q8["llama-cpp-python"], 3),
                      "ttft_q8_ratio_vs_handler": round(q8["ours"] / q8["llama-cpp-python"], 4)}))


if __name__ == "__main__":
    main()
