#!/usr/bin/env python3
"""Task accuracy of the trained demo model through the whole pipeline: the PyTorch model (the test suite's
independent reference of the original 2.6 pipeline, on the checkpoint's bf16 weights) beside our runtime on f32 /
f16 files, quantized language models (llama.cpp's Q8_0, Q4_K_M) and quantized mmproj files (q8_0, q4_0).

    python benchmarks/bench_accuracy.py [--n 400] [--seed 9000] [--threads 2] [--configs f16,Q8_0+q8_0]

The questions are the "shapes" task (minicpmv_edge/shapes_task.py) drawn with a seed training never used: every
question kind equally often, picture sizes across the whole range (upscaled, single-piece and sliced). Answers are
greedy (temperature 0, no repetition penalty) and scored by exact match. Prints a table (accuracy per question kind,
and how often each configuration gives the PyTorch model's very answer) and ends with one JSON line whose
"accuracy" maps each configuration (and "pytorch") to its accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the test suite's PyTorch reference

from minicpmv_edge.convert import convert_checkpoint  # noqa: E402
from minicpmv_edge.convert.quantize import quantize_model  # noqa: E402
from minicpmv_edge.convert.quantize_mmproj import quantize_mmproj  # noqa: E402
from minicpmv_edge.demo import DEMO_CHECKPOINT  # noqa: E402
from minicpmv_edge.shapes_task import KINDS, Item, dataset, score  # noqa: E402

HELD_OUT_SEED = 9000  # tools/train_demo.py trains on seed 1000 and validates on 2000
MAX_NEW_TOKENS = 24  # the longest answer ("The second image.") is a few tokens


@dataclass(frozen=True)
class Config:
    """A file pair: the converted precision, then optional quantizations of the language model and the mmproj."""

    outtype: str
    llm_quant: str | None = None
    mmproj_quant: str | None = None

    @property
    def name(self) -> str:
        if not (self.llm_quant or self.mmproj_quant):
            return self.outtype
        return f"{self.llm_quant or self.outtype}+{self.mmproj_quant or self.outtype}"


CONFIGS = [Config("f32"), Config("f16"), Config("f16", "Q8_0", "q8_0"), Config("f16", "Q8_0"),
           Config("f16", "Q4_K_M"), Config("f16", None, "q8_0"), Config("f16", None, "q4_0"),
           Config("f16", "Q4_K_M", "q4_0")]


def files(cfg: Config, checkpoint: Path, work: Path, threads: int) -> tuple[Path, Path]:
    """(language model, mmproj) for a configuration, converted / quantized into `work` once."""
    base = work / cfg.outtype
    model, mmproj = base / f"model-{cfg.outtype}.gguf", base / f"mmproj-model-{cfg.outtype}.gguf"
    if not model.exists():
        convert_checkpoint(checkpoint, base, cfg.outtype, progress=False)
    if cfg.llm_quant:
        q = work / f"model-{cfg.llm_quant}.gguf"
        if not q.exists():
            quantize_model(model, q, cfg.llm_quant, n_threads=threads)
        model = q
    if cfg.mmproj_quant:
        q = work / f"mmproj-model-{cfg.mmproj_quant}.gguf"
        if not q.exists():
            quantize_mmproj(mmproj, q, cfg.mmproj_quant)
        mmproj = q
    return model, mmproj


def answers_ours(model: Path, mmproj: Path, items: list[Item], threads: int) -> list[str]:
    from minicpmv_edge.chat import MiniCPMV

    with MiniCPMV(model, mmproj, n_ctx=4096, n_threads=threads) as m:
        return [str(m.chat(it.messages, temperature=0, repetition_penalty=1.0, max_new_tokens=MAX_NEW_TOKENS))
                for it in items]


def answers_pytorch(checkpoint: Path, items: list[Item], threads: int) -> list[str]:
    import torch

    from reference.pipeline import reference_pipeline

    torch.set_num_threads(threads)
    ref = reference_pipeline(checkpoint)
    return [ref.decode(ref.generate(it.messages, n_tokens=MAX_NEW_TOKENS)[0]) for it in items]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="questions (a multiple of 5 keeps the kinds even)")
    ap.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", default=str(DEMO_CHECKPOINT), help="original-layout checkpoint folder")
    ap.add_argument("--configs", default=",".join(c.name for c in CONFIGS),
                    help="comma-separated, from: " + ", ".join(c.name for c in CONFIGS))
    args = ap.parse_args(argv)
    by_name = {c.name: c for c in CONFIGS}
    chosen = [by_name[n] for n in args.configs.split(",") if n]
    checkpoint = Path(args.checkpoint)

    t0 = time.perf_counter()
    items = dataset(args.seed, args.n)
    print(f"{len(items)} questions (seed {args.seed}), made in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    results: dict[str, dict[str, float]] = {}
    agree: dict[str, float] = {}
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    ref = answers_pytorch(checkpoint, items, args.threads)
    seconds["pytorch"] = time.perf_counter() - t
    results["pytorch"] = score(items, ref)
    with tempfile.TemporaryDirectory(prefix="bench-accuracy-") as tmp:
        for cfg in chosen:
            model, mmproj = files(cfg, checkpoint, Path(tmp), args.threads)
            t = time.perf_counter()
            got = answers_ours(model, mmproj, items, args.threads)
            seconds[cfg.name] = time.perf_counter() - t
            results[cfg.name] = score(items, got)
            agree[cfg.name] = sum(a == b for a, b in zip(got, ref, strict=True)) / len(items)
            wrong = [(it.kind, it.answer, a) for it, a in zip(items, got, strict=True) if a != it.answer][:3]
            print(f"{cfg.name}: {results[cfg.name]['all']:.4f} ({seconds[cfg.name]:.0f} s); e.g. wrong: {wrong}",
                  file=sys.stderr)

    kinds = [k for k in KINDS if k in results["pytorch"]]
    print(f"\n{'configuration':<16}" + "".join(f"{k:>10}" for k in kinds) + f"{'all':>10}{'Δ points':>10}"
          f"{'same as PT':>12}{'seconds':>9}")
    base = results["pytorch"]["all"]
    for name, r in results.items():
        delta = f"{100 * (r['all'] - base):+.2f}" if name != "pytorch" else ""
        same = f"{agree[name]:.4f}" if name in agree else ""
        print(f"{name:<16}" + "".join(f"{r[k]:>10.4f}" for k in kinds) + f"{r['all']:>10.4f}{delta:>10}{same:>12}"
              f"{seconds[name]:>9.0f}")
    print(json.dumps({"bench": "accuracy", "n": len(items), "seed": args.seed, "checkpoint": str(checkpoint),
                      "accuracy": {k: round(r["all"], 4) for k, r in results.items()},
                      "per_kind": {k: {q: round(v, 4) for q, v in r.items() if q != "all"} for k, r in results.items()},
                      "same_answer_as_pytorch": {k: round(v, 4) for k, v in agree.items()},
                      "seconds": {k: round(v, 1) for k, v in seconds.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
