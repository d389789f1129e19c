#!/usr/bin/env python3
"""Time to first token for a question about a video on the real-dims MiniCPM-V 4.5 preset: our runtime with 4.5's
packed frames (the 3-D resampler) vs llama.cpp's libmtmd (through llama-cpp-python), which encodes every frame
alone, in the same run.

    python benchmarks/bench_video.py [--threads 2] [--quick | --seconds N] [--size 448x252]

The clip: a generated, deterministic video of moving shapes (30 fps, MPEG-4 part 2 in MP4; 60 s, `--quick` 12 s),
kept in the model cache. The model: the `real-4.5` preset (the released tower and resampler, 1152 x 27 layers, 64 x
4096 with 32 heads; its language model has the released width and heads but only 2 layers, so the prefill here is
far cheaper than Qwen3-8B's 36 layers and the vision encoder dominates). Files: the same f16 language model for both;
our q8_0 mmproj (our int8 kernel) against libmtmd's f16 mmproj, bench_encode.py's "q8 vs mtmd f16" convention
(`--ours-mmproj f16` compares f16 with f16).

Frames: 4.5's recipe (`Video(path)`, the model card's encode_video at 5 fps: up to 180 groups of up to 3 frames;
packing starts above 36 s, so a 12 s clip is not packed and a 60 s one is packed by 2) picks the frame indices; the
parent decodes those frames once (timed, reported) and hands them to libmtmd; our side is
`chat([{"role": "user", "content": [Video(clip), question]}], max_new_tokens=1)`, which decodes the same frames with
the same decoder inside the timed call (so our time includes the video decoding, libmtmd's does not).
libmtmd: the frames as images in one ChatML prompt (`<__media__>` per frame, the question, the empty think block),
`mtmd_tokenize` + `mtmd_helper_eval_chunks` (llama.cpp's own path: each frame encoded alone, its rows decoded in
batches, the text chunks too) and the first token picked from the last logits. libmtmd slices any frame larger than
its threshold (a 640x360 frame: overview + 2 slices, 192 rows), so the default frame size, 448x252, is one it does
not slice: 64 rows per frame, the libmtmd behaviour the 4.5 fact sheet (§10) describes; both sides then scale each
frame to about 448² area. Each engine runs in its own fresh process (peak RSS of that process); times from the call
to the first generated token. `--force-packing N` (the card's force_packing, 1-3) packs our side by N whatever the
length (a short clip then shows the 3-D path too): the same frames, handed to chat() as images with the recipe's
time ids in groups of N (`max_slice_nums=1, use_image_id=False`, as Video(path) does), their decoding timed.
Ends with one JSON line; "v45_video_ttft_ratio_vs_mtmd" is ours / libmtmd (target <=
0.5).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the test suite's helpers: run_measured

QUESTION = "What happens in the video? Describe the moving shapes."
FPS = 30


def make_clip(path: Path, seconds: int, w: int, h: int) -> Path:
    """Moving shapes on a slowly changing background, deterministic (a fixed seed, a fixed encoder setting)."""
    import av

    rng = np.random.default_rng(45)
    shapes = [(rng.uniform(0, w), rng.uniform(0, h), rng.uniform(-6, 6), rng.uniform(-4, 4), rng.uniform(12, 40),
               rng.integers(40, 256, 3)) for _ in range(6)]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    noise = rng.normal(0, 6, (h, w, 3)).astype(np.float32)
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("mpeg4", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(seconds * FPS):
            img = np.stack([60 + 40 * np.sin((xx + 2 * i) / 50), 80 + 30 * np.cos((yy - i) / 40),
                            np.full_like(xx, 70 + 50 * np.sin(i / 90))], -1) + noise
            for k, (x0, y0, vx, vy, r, color) in enumerate(shapes):
                cx, cy = (x0 + vx * i) % w, (y0 + vy * i) % h
                mask = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r) if k % 2 else \
                    ((np.abs(xx - cx) < r) & (np.abs(yy - cy) < r))
                img[mask] = color
            frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
            for pkt in stream.encode(frame):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    tmp.replace(path)
    return path


def child_ours(model: str, mmproj: str, clip: str, threads: int, n_ctx: int, flash_attn: bool,
               force_packing: int = 0) -> dict:
    from minicpmv_edge.chat import MiniCPMV
    from minicpmv_edge.families.family import VideoPlan
    from minicpmv_edge.families.v4_5.video import PackedSeconds
    from minicpmv_edge.video import Video, sampled_frames

    t = time.perf_counter()
    m = MiniCPMV(model, mmproj, n_ctx=n_ctx, n_threads=threads, flash_attn=flash_attn)
    load_s = time.perf_counter() - t
    if not force_packing:  # the recipe as Video(path) runs it
        m.chat([{"role": "user", "content": [Video(clip), QUESTION]}], max_new_tokens=1)
        ttft = m.last.ttft_ms / 1e3
    else:  # the card's force_packing: the same frames, handed over with their packed time ids, decoding timed
        t0 = time.perf_counter()
        recipe = PackedSeconds(force_packing=force_packing)
        plans: list[VideoPlan] = []

        def pick(n_frames: int, fps: float) -> list[int]:
            plans.append(recipe.plan(n_frames, fps))
            return plans[0].frames

        _, it = sampled_frames(Video(clip), pick)
        frames = list(it)
        decode_s = time.perf_counter() - t0
        m.chat([{"role": "user", "content": [*frames, QUESTION]}], max_new_tokens=1, temporal_ids=plans[0].groups,
               max_slice_nums=1, use_image_id=False)
        ttft = decode_s + m.last.ttft_ms / 1e3
    last = m.last
    rows = last.pieces * m.encoder.query_num  # 4.5: 64 rows per packed unit
    return {"load_s": load_s, "ttft_s": ttft, "encode_s": last.encode_ms / 1e3,
            "prefill_s": last.prefill_ms / 1e3, "frames": last.images, "units": last.pieces, "image_tokens": rows,
            "prompt_tokens": last.prompt_tokens}


def child_mtmd(model: str, mmproj: str, frames_npy: str, threads: int, n_ctx: int, flash_attn: bool) -> dict:
    import ctypes

    import llama_cpp
    from llama_cpp import mtmd_cpp as M

    from reference import mtmd as _quiet_logs  # noqa: F401  (silences libmtmd's per-tensor log at load)

    t = time.perf_counter()
    llm = llama_cpp.Llama(model, n_ctx=n_ctx, n_batch=512, n_threads=threads, n_threads_batch=threads,
                          flash_attn=flash_attn, verbose=False)
    params = M.mtmd_context_params_default()
    params.use_gpu, params.n_threads, params.print_timings, params.warmup = False, threads, False, False
    ctx = M.mtmd_init_from_file(mmproj.encode(), llm.model, params)
    if not ctx:
        raise RuntimeError(f"libmtmd could not load {mmproj}")
    load_s = time.perf_counter() - t
    frames = np.load(frames_npy, mmap_mode="r")
    n = len(frames)
    marker = M.mtmd_default_marker().decode()
    prompt = ("<|im_start|>user\n" + "".join(marker + "\n" for _ in range(n)) + QUESTION
              + "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")

    t0 = time.perf_counter()  # from the decoded frames to the first token
    bitmaps = (M.mtmd_bitmap_p_ctypes * n)()
    for i in range(n):
        f = np.ascontiguousarray(frames[i], dtype=np.uint8)
        bitmaps[i] = M.mtmd_bitmap_init(f.shape[1], f.shape[0], f.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
    del frames
    chunks = M.mtmd_input_chunks_init()
    prompt_bytes = prompt.encode()  # kept alive while libmtmd reads it
    text = M.mtmd_input_text()
    text.text, text.text_len = prompt_bytes, len(prompt_bytes)
    text.add_special = False
    text.parse_special = True
    if M.mtmd_tokenize(ctx, chunks, ctypes.byref(text), bitmaps, n) != 0:
        raise RuntimeError("mtmd_tokenize failed")
    image_tokens = sum(M.mtmd_input_chunk_get_n_tokens(M.mtmd_input_chunks_get(chunks, i))
                       for i in range(M.mtmd_input_chunks_size(chunks))
                       if M.mtmd_input_chunk_get_type(M.mtmd_input_chunks_get(chunks, i))
                       == M.MTMD_INPUT_CHUNK_TYPE_IMAGE)
    prompt_tokens = M.mtmd_helper_get_n_tokens(chunks)
    n_past = llama_cpp.llama_pos(0)
    if M.mtmd_helper_eval_chunks(ctx, llm.ctx, chunks, 0, 0, 512, True, ctypes.byref(n_past)) != 0:
        raise RuntimeError("mtmd_helper_eval_chunks failed")
    logits = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(llm.model))
    first = int(np.argmax(np.ctypeslib.as_array(logits, shape=(n_vocab,))))
    ttft = time.perf_counter() - t0
    for i in range(n):
        M.mtmd_bitmap_free(bitmaps[i])
    M.mtmd_input_chunks_free(chunks)
    M.mtmd_free(ctx)
    llm.close()
    return {"load_s": load_s, "ttft_s": ttft, "frames": n, "image_tokens": int(image_tokens),
            "prompt_tokens": int(prompt_tokens), "n_past": int(n_past.value), "first_token": first}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="a 12-second clip (not packed: 4.5 packs above 36 s)")
    ap.add_argument("--seconds", type=int, default=None, help="clip length in seconds (default 60; --quick 12)")
    ap.add_argument("--size", default="448x252", help="frame size WxH (libmtmd slices frames above ~448x252)")
    ap.add_argument("--ours-mmproj", choices=["q8_0", "f16"], default="q8_0")
    ap.add_argument("--mtmd-mmproj", choices=["q8_0", "f16"], default="f16")
    ap.add_argument("--flash-attn", choices=["on", "off"], default="on", help="the same for both language models")
    ap.add_argument("--force-packing", type=int, choices=[0, 1, 2, 3], default=0,
                    help="the model card's force_packing for our side (0: the recipe's own); libmtmd is unchanged")
    ap.add_argument("--only", choices=["ours", "mtmd"], default=None, help="run one engine (for trying)")
    ap.add_argument("--child", nargs=4, metavar=("ENGINE", "MODEL", "MMPROJ", "INPUT"), help=argparse.SUPPRESS)
    ap.add_argument("--n-ctx", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--preset", default="real-4.5", help=argparse.SUPPRESS)  # tiny-4.5: a smoke test
    args = ap.parse_args()
    fa = args.flash_attn == "on"
    if args.child:
        engine, model, mmproj, src = args.child
        if engine == "ours":
            print(json.dumps(child_ours(model, mmproj, src, args.threads, args.n_ctx, fa, args.force_packing)))
        else:
            print(json.dumps(child_mtmd(model, mmproj, src, args.threads, args.n_ctx, fa)))
        return

    from helpers import run_measured

    from minicpmv_edge.convert.quantize_mmproj import quantize_mmproj
    from minicpmv_edge.demo import cache_dir, ensure_model
    from minicpmv_edge.families.v4_5.video import VIDEO, PackedSeconds
    from minicpmv_edge.video import Video, probe, sampled_frames

    seconds = args.seconds or (12 if args.quick else 60)
    w, h = (int(v) for v in args.size.lower().split("x"))
    model, mmproj_f16 = ensure_model(args.preset, "f16")
    mmproj_q8 = mmproj_f16.with_name("mmproj-model-q8_0-requant.gguf")
    if "q8_0" in (args.ours_mmproj, args.mtmd_mmproj) and not mmproj_q8.exists():
        quantize_mmproj(mmproj_f16, mmproj_q8, "q8_0")
    files = {"f16": mmproj_f16, "q8_0": mmproj_q8}
    clips = cache_dir() / "bench-video"
    clips.mkdir(parents=True, exist_ok=True)
    clip = clips / f"shapes-{seconds}s-{w}x{h}-{FPS}fps.mp4"
    if not clip.exists():
        t = time.perf_counter()
        make_clip(clip, seconds, w, h)
        print(f"wrote {clip} ({seconds} s, {w}x{h}, {FPS} fps) in {time.perf_counter() - t:.1f} s")

    info = probe(Video(clip))
    recipe = PackedSeconds(force_packing=args.force_packing or None)
    plan = recipe.plan(info.n_frames, info.fps)
    t = time.perf_counter()
    n, it = sampled_frames(Video(clip), VIDEO.frame_indices, info)
    frames = np.stack(list(it))
    decode_s = time.perf_counter() - t
    packing = plan.packing
    groups = len(plan.groups or plan.frames)
    print(f"clip: {info.n_frames} frames at {info.fps:g} fps, {info.width}x{info.height}; 4.5's recipe: {n} frames, "
          f"packing {packing}, {groups} groups; decoding them: {decode_s:.2f} s")
    n_ctx = n * 64 * 3 + 512  # room for libmtmd slicing a frame into 3 pieces; ours needs less
    results: dict = {}
    with tempfile.TemporaryDirectory(dir=clips) as tmp:
        frames_npy = Path(tmp) / "frames.npy"
        np.save(frames_npy, frames)
        del frames
        for engine in ("ours", "mtmd"):
            if args.only and engine != args.only:
                continue
            mmproj = files[args.ours_mmproj if engine == "ours" else args.mtmd_mmproj]
            src = str(clip) if engine == "ours" else str(frames_npy)
            cmd = [sys.executable, __file__, "--threads", str(args.threads), "--n-ctx", str(n_ctx),
                   "--flash-attn", args.flash_attn, "--force-packing", str(args.force_packing),
                   "--child", engine, str(model), str(mmproj), src]
            load = os.getloadavg()[0]
            r, peak_mb = run_measured(cmd, timeout=14400)  # a fresh process: its own peak RSS
            if r.returncode != 0:
                raise SystemExit(f"{engine} failed:\n{r.stderr[-3000:]}")
            results[engine] = {**json.loads(r.stdout.strip().splitlines()[-1]), "peak_rss_mb": peak_mb,
                               "load_before": load}
            x = results[engine]
            print(f"{engine:5s} ({(args.ours_mmproj if engine == 'ours' else args.mtmd_mmproj)} mmproj): "
                  f"time to first token {x['ttft_s']:8.2f} s, {x['frames']} frames -> {x['image_tokens']} image "
                  f"tokens, prompt {x['prompt_tokens']} tokens, load {x['load_s']:.2f} s, peak RSS {peak_mb} MB "
                  f"(1-min load average before: {load:.1f})")
            if engine == "ours":
                print(f"      encode {x['encode_s']:.2f} s ({x['units']} units), prefill {x['prefill_s']:.2f} s")
    summary: dict = {"bench": "video", "version": "4.5", "threads": args.threads, "cpu": cpu_model(),
                     "n_cpus": os.cpu_count(), "clip_seconds": seconds, "clip_size": f"{w}x{h}", "clip_fps": FPS,
                     "frames": n, "packing": packing, "force_packing": args.force_packing, "groups": groups,
                     "frame_decode_s": round(decode_s, 3),
                     "ours_mmproj": args.ours_mmproj, "mtmd_mmproj": args.mtmd_mmproj, "flash_attn": fa,
                     "llm": "real-4.5 preset: released width and heads, 2 layers (Qwen3-8B has 36)",
                     "load_average_1m": round(os.getloadavg()[0], 2)}
    if "ours" in results:
        o = results["ours"]
        summary |= {"v45_video_tokens": o["image_tokens"], "v45_video_ttft_s": round(o["ttft_s"], 3),
                    "v45_video_encode_s": round(o["encode_s"], 3), "v45_video_prefill_s": round(o["prefill_s"], 3),
                    "v45_video_prompt_tokens": o["prompt_tokens"], "v45_video_peak_rss_mb": o["peak_rss_mb"]}
    if "mtmd" in results:
        m = results["mtmd"]
        summary |= {"mtmd_video_tokens": m["image_tokens"], "mtmd_video_ttft_s": round(m["ttft_s"], 3),
                    "mtmd_video_prompt_tokens": m["prompt_tokens"], "mtmd_video_peak_rss_mb": m["peak_rss_mb"]}
    if len(results) == 2:
        ratio = results["ours"]["ttft_s"] / results["mtmd"]["ttft_s"]
        print(f"ours / libmtmd, time to first token: {ratio:.3f} (image tokens {results['ours']['image_tokens']} vs "
              f"{results['mtmd']['image_tokens']})")
        summary["v45_video_ttft_ratio_vs_mtmd"] = round(ratio, 4)
    print(f"note: the real-4.5 language model has 2 layers (Qwen3-8B: 36); {args.threads} threads on {cpu_model()}, "
          f"{os.cpu_count()} CPUs")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
