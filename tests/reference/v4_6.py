"""MiniCPM-V 4.6 as transformers 5.23 runs it (native: `MiniCPMV4_6ForConditionalGeneration`, its processor with the
default torchvision image processor, the checkpoint's chat template), run in a child process under that release
(reference/isolated.py). For each case: the prompt's ids as the processor builds them, every image's embeddings
(`get_image_features`: the tower, the insert merger and the merger, all pieces of the image in order), and greedy
generate()'s new ids and text (`post_process_image_text_to_text`: special tokens skipped, stripped)."""

from __future__ import annotations

from typing import Any

import numpy as np


def _hf_messages(messages: list[dict]) -> tuple[list[dict], list[Any]]:
    """Our message format (content: a string, or a list of strings and images) -> transformers' chat format and
    the images in order."""
    out, images = [], []
    for m in messages:
        content = m["content"]
        if isinstance(content, str):
            out.append({"role": m["role"], "content": [{"type": "text", "text": content}]})
            continue
        items = []
        for part in content:
            if isinstance(part, str):
                items.append({"type": "text", "text": part})
            else:
                items.append({"type": "image"})
                images.append(part)
        out.append({"role": m["role"], "content": items})
    return out, images


def original_runs(hf_dir: str, cases: list[tuple[list[dict], dict]]) -> list[dict]:
    """cases: (messages, {"downsample_mode", "max_slice_nums", "max_new_tokens", "enable_thinking"})."""
    import torch
    from transformers import AutoProcessor, MiniCPMV4_6ForConditionalGeneration

    torch.manual_seed(0)
    processor = AutoProcessor.from_pretrained(hf_dir)
    model = MiniCPMV4_6ForConditionalGeneration.from_pretrained(hf_dir, dtype=torch.float32).eval()
    results = []
    for messages, kw in cases:
        mode = kw.get("downsample_mode", "16x")
        slices = kw.get("max_slice_nums", 9)
        hf_msgs, images = _hf_messages(messages)
        template_kw = {"enable_thinking": kw["enable_thinking"]} if "enable_thinking" in kw else {}
        text = processor.apply_chat_template(hf_msgs, add_generation_prompt=True, tokenize=False, **template_kw)
        proc_kw = {"downsample_mode": mode, "max_slice_nums": slices}
        inputs = processor(text=[text], images=[images] if images else None, return_tensors="pt", **proc_kw)
        pieces = []
        with torch.no_grad():
            for img in images:
                one = processor.image_processor([[img]], return_tensors="pt", **proc_kw)
                feats = model.get_image_features(one["pixel_values"], one["target_sizes"], downsample_mode=mode)
                pooled = feats.pooler_output
                rows = torch.cat(list(pooled)) if isinstance(pooled, (list, tuple)) else pooled.reshape(
                    -1, pooled.shape[-1])
                pieces.append(rows.float().numpy())
            out = model.generate(**inputs, max_new_tokens=kw.get("max_new_tokens", 24), do_sample=False,
                                 downsample_mode=mode)
        n = inputs["input_ids"].shape[1]
        new = out[0, n:]
        answer = processor.post_process_image_text_to_text(new[None], skip_special_tokens=True)[0]
        results.append({"ids": inputs["input_ids"][0].tolist(), "text_prompt": text, "pieces": pieces,
                        "tokens": new.tolist(), "text": answer})
    return results


def processor_pixels(hf_dir: str, images: list[np.ndarray], mode: str, max_slice_nums: int = 9) -> list[dict]:
    """Each image alone through the processor: its pixel_values split into pieces [3, H, W] and target sizes."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(hf_dir)
    out = []
    for img in images:
        one = processor.image_processor([[img]], return_tensors="np", downsample_mode=mode,
                                        max_slice_nums=max_slice_nums)
        pv, sizes = np.asarray(one["pixel_values"])[0], np.asarray(one["target_sizes"])
        pieces, at = [], 0
        for h, w in sizes:
            flat = pv[:, :, at * 14:(at + h * w) * 14]  # (3, 14, h*w*14): patch l in columns 14l..14l+13
            at += h * w
            pieces.append(flat.reshape(3, 14, h, w, 14).transpose(0, 2, 1, 3, 4).reshape(3, h * 14, w * 14))
        out.append({"pieces": pieces, "sizes": sizes.tolist()})
    return out
