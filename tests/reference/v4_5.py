"""MiniCPM-V 4.5 as its original chat() runs it, written from the original `modeling_minicpmv.py` (as the fact sheet
/work/shared/spec/minicpmv-4.0-4.5.md describes it) and run under transformers 4.51 (the release its config.json
records; Qwen3 is not in the test extra's 4.46) in a process of its own (reference/isolated.py): the checkpoint's
tokenizer and chat template with `enable_thinking` always passed (False unless told), 2.6's placeholders, slicing
and normalisation (reference/pipeline.py, reference/slicing.py), 2.6's tower and resampler (reference/vision.py;
for images the 4.5 resampler is the 2.6 one), transformers' own Qwen3ForCausalLM fed inputs_embeds, and chat()'s
decode: a leading `<|im_start|>` and the terminator dropped, special tokens kept, stripped, and `<think>\\n` put
before the answer when thinking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import slicing
from .pipeline import TAG, ReferencePipeline

THINK_PREFIX = "<think>\n"  # what chat() puts before a thinking answer (the end of its own prompt)


class ReferencePipeline45(ReferencePipeline):
    def answer(self, tokens: list[int], thinking: bool) -> str:
        """chat()'s text for generated `tokens` (the stop token already dropped)."""
        bos = self.tok.convert_tokens_to_ids("<|im_start|>")
        if tokens and tokens[0] == bos:
            tokens = tokens[1:]
        text = self.tok.decode(tokens, skip_special_tokens=False).strip()
        return THINK_PREFIX + text if thinking else text

    @torch.no_grad()
    def greedy(self, msgs: list[dict], n_tokens: int, **kw) -> list[int]:
        """Greedy ids up to a terminator (dropped), as generate(num_beams=1, do_sample=False) with transformers'
        own KV cache over the same inputs_embeds."""
        ids, pieces = self.prompt(msgs, **kw)
        out = self.llm(inputs_embeds=self.embeddings(ids, pieces)[None], use_cache=True)
        tokens: list[int] = []
        for _ in range(n_tokens):
            t = int(out.logits[0, -1].argmax())
            if t in self.stop:
                break
            tokens.append(t)
            out = self.llm(inputs_embeds=self.embed([t])[None], past_key_values=out.past_key_values, use_cache=True)
        return tokens

    @torch.no_grad()
    def image_rows(self, img: Image.Image, max_slice_nums: int) -> np.ndarray:
        """[pieces x 64, E]: the resampler's rows of one image, overview first then slices row-major."""
        pieces = [slicing.normalize(p) for p in slicing.pieces(img.convert("RGB"), max_slice_nums)]
        return np.concatenate([self.vision.encode(p, rule="hf") for p in pieces])


class PackedPipeline45(ReferencePipeline45):
    """chat(..., temporal_ids=G) as the original runs it (fact sheet §5.3): the processor splits the prompt at the
    image tags; a group's first frame gets the placeholder of its own size, numbered among all images, every other
    frame no placeholder and the text chunk before its tag `.strip()`ed; pieces are emitted piece-index-major
    within a group, one packed unit per (group, piece index) with the group's time ids; the 3-D resampler
    (reference/resampler_3d.py) gives one block per unit, scattered over the placeholders' rows in prompt order."""

    def __init__(self, hf_dir: Path) -> None:
        from .checkpoint import load_state
        from .resampler_3d import Reference3DResampler

        super().__init__(hf_dir)
        self.resampler3d = Reference3DResampler(load_state(hf_dir), self.cfg["hidden_size"])

    def packed_prompt(self, msgs: list[dict], temporal_ids: list[list[int]], max_slice_nums: int,
                      use_image_id: bool, enable_thinking: bool = False
                      ) -> tuple[list[int], list[tuple[list[np.ndarray], list[int]]]]:
        """(input ids, packed units in order: (the unit's normalised frame-pieces, the group's time ids))."""
        copy, images = [], []
        for m in msgs:
            content = m["content"] if isinstance(m["content"], list) else [m["content"]]
            parts = []
            for c in content:
                if isinstance(c, Image.Image):
                    images.append(c)
                    parts.append(TAG)
                else:
                    parts.append(c)
            copy.append({"role": m["role"], "content": "\n".join(parts)})
        text = self.tok.apply_chat_template(copy, tokenize=False, add_generation_prompt=True,
                                            enable_thinking=enable_thinking)
        assert sum(len(g) for g in temporal_ids) == len(images)
        chunks = text.split(TAG)
        assert len(chunks) == len(images) + 1
        firsts, at = [], 0
        for g in temporal_ids:
            firsts.append(at)
            at += len(g)
        final, units = "", []
        for i, chunk in enumerate(chunks[:-1]):
            if i in firsts:
                grid, _ = slicing.plan(images[i].size, max_slice_nums)
                final += chunk + self.placeholder(grid, i, use_image_id)
            else:
                final += chunk.strip()
        final += chunks[-1]
        for g, ids in enumerate(temporal_ids):
            frames = images[firsts[g]:firsts[g] + len(ids)]
            pieces = [[slicing.normalize(p) for p in slicing.pieces(f.convert("RGB"), max_slice_nums)]
                      for f in frames]
            assert len({len(p) for p in pieces}) == 1
            units += [([p[s] for p in pieces], list(ids)) for s in range(len(pieces[0]))]
        return self.tok(final, add_special_tokens=False)["input_ids"], units

    @torch.no_grad()
    def unit_rows(self, units: list[tuple[list[np.ndarray], list[int]]]) -> list[np.ndarray]:
        """One [Q, E] block per packed unit: the tower on every frame-piece, then the 3-D resampler."""
        feats, sizes, index, ids = [], [], [], []
        for pieces, t in units:
            index.append(list(range(len(feats), len(feats) + len(pieces))))
            ids.append(t)
            for p in pieces:
                feats.append(self.vision.tower(p, rule="hf"))
                sizes.append((p.shape[1] // 14, p.shape[2] // 14))
        return self.resampler3d.units(feats, sizes, index, ids)

    @torch.no_grad()
    def packed_greedy(self, ids: list[int], blocks: list[np.ndarray], n_tokens: int) -> list[int]:
        """Greedy ids up to a terminator (dropped), the unit blocks scattered over the placeholders' rows."""
        emb = self.embed(ids).clone()
        starts = {self.tok.convert_tokens_to_ids(t) for t in ("<image>", "<slice>")}
        ends = {self.tok.convert_tokens_to_ids(t) for t in ("</image>", "</slice>")}
        bounds, open_at = [], None
        for i, t in enumerate(ids):
            if t in starts:
                open_at = i + 1
            elif t in ends and open_at is not None:
                if i - open_at == self.q:
                    bounds.append((open_at, i))
                open_at = None
        assert len(bounds) == len(blocks), (len(bounds), len(blocks))
        for (a, b), block in zip(bounds, blocks, strict=True):
            emb[a:b] = torch.from_numpy(block)
        out = self.llm(inputs_embeds=emb[None], use_cache=True)
        tokens: list[int] = []
        for _ in range(n_tokens):
            t = int(out.logits[0, -1].argmax())
            if t in self.stop:
                break
            tokens.append(t)
            out = self.llm(inputs_embeds=self.embed([t])[None], past_key_values=out.past_key_values, use_cache=True)
        return tokens


def packed_runs(hf_dir: str, cases: list[tuple[list[dict], dict]]) -> list[dict]:
    """cases: (messages, {"temporal_ids", "max_slice_nums", "use_image_id", "max_new_tokens"}). For each: the
    prompt's ids, every packed unit's [Q, E] block in order, greedy ids up to a terminator (dropped), chat()'s
    text."""
    import transformers

    assert transformers.__version__ == "4.51.0", transformers.__version__
    ref = PackedPipeline45(Path(hf_dir))
    out = []
    for msgs, kw in cases:
        ids, units = ref.packed_prompt(msgs, kw["temporal_ids"], int(kw["max_slice_nums"]), bool(kw["use_image_id"]))
        blocks = ref.unit_rows(units)
        tokens = ref.packed_greedy(ids, blocks, int(kw["max_new_tokens"]))
        out.append({"ids": ids, "units": blocks, "tokens": tokens, "text": ref.answer(tokens, False)})
    return out


def original_runs(hf_dir: str, cases: list[tuple[list[dict], dict]]) -> list[dict]:
    """cases: (messages, {"max_new_tokens", "enable_thinking", "max_slice_nums", "system_prompt"}). For each: the
    prompt's ids, every image's embedding rows, greedy ids up to a terminator (dropped) and chat()'s text."""
    import transformers

    assert transformers.__version__ == "4.51.0", transformers.__version__
    ref = ReferencePipeline45(Path(hf_dir))
    out = []
    for msgs, kw in cases:
        thinking = bool(kw.get("enable_thinking", False))
        slices = int(kw.get("max_slice_nums", 9))
        prompt_kw = {"enable_thinking": thinking, "max_slice_nums": slices,
                     "system_prompt": kw.get("system_prompt", "")}
        ids, _ = ref.prompt(msgs, **prompt_kw)
        tokens = ref.greedy(msgs, int(kw["max_new_tokens"]), **prompt_kw)
        images = [c for m in msgs if isinstance(m["content"], list) for c in m["content"] if isinstance(c, Image.Image)]
        out.append({"ids": ids, "pieces": [ref.image_rows(img, slices) for img in images], "tokens": tokens,
                    "text": ref.answer(tokens, thinking)})
    return out
