"""The original MiniCPM-V pipeline in PyTorch, written from the original `modeling_minicpmv.py` and
`processing_minicpmv.py`: original preprocessing (reference/slicing.py), the reference vision tower and resampler,
the HF tokenizer and chat template, image features scattered over the `<unk>` rows between the markers, and the
transformers LLM fed `inputs_embeds`, decoded greedily without a cache."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import slicing
from .llm import load_llm, load_tokenizer
from .vision import reference_vision

TAG = "(<image>./</image>)"


@dataclass(frozen=True)
class Original:
    """What differs between the originals' processors and chat() for checkpoints that name their `version`
    (written from each original's `processing_minicpmv.py` / `modeling_minicpmv.py`)."""

    stops: tuple[str, ...]  # generation_config's eos tokens
    image_ids: bool  # chat()'s default use_image_id
    slices_in_slice: bool  # slices as <slice> pieces (2.6) or as <image> pieces inside one <slice>...</slice> (2.5)
    rule: str | None  # the tower's position-id rule (reference/vision.py; None: the timm tower's resampled grid)
    padded_batch: bool  # batch_vision_input runs the pieces as one padded batch
    thinking: bool = False  # chat() always passes enable_thinking to the template (4.5; default False)
    bos: bool = False  # the processor's plain encode() adds the tokenizer's BOS (4.0's Llama tokenizer)


ORIGINALS = {
    "2.6": Original(("<|im_end|>", "<|endoftext|>"), True, True, "hf", False),
    "4.5": Original(("<|im_end|>", "<|endoftext|>"), True, True, "hf", False, thinking=True),  # reference/v4_5.py
    "4.0": Original(("<|im_end|>", "</s>"), True, True, "hf", False, bos=True),  # 2.6's, Llama tokenizer
    "2.5": Original(("<|eot_id|>", "<|end_of_text|>"), False, False, "flat", True),
    "2.0": Original(("</s>",), False, False, None, False),  # its config has no `version` (ReferencePipeline20)
}


class ReferencePrompt:
    """Prompts of checkpoints that name their version, as chat() + the processor build them: the tokenizer and chat
    template, the placeholders, the original slicing and normalisation (tools/train_demo.py trains on exactly
    these)."""

    def __init__(self, hf_dir: Path) -> None:
        self.cfg = json.loads((hf_dir / "config.json").read_text())
        self.version = str(self.cfg["version"])
        self.original = ORIGINALS[self.version]
        self.tok = load_tokenizer(hf_dir)
        self.q = self.cfg["query_num"]
        self.stop = {self.tok.convert_tokens_to_ids(t) for t in self.original.stops}

    def placeholder(self, grid, i: int, use_image_id: bool) -> str:
        unk = "<unk>" * self.q
        s = (f"<image_id>{i}</image_id>" if use_image_id else "") + f"<image>{unk}</image>"
        if grid and self.original.slices_in_slice:
            s += "\n".join(["".join(f"<slice>{unk}</slice>" for _ in range(grid[0]))] * grid[1])
        elif grid:
            row = "".join(f"<image>{unk}</image>" for _ in range(grid[0]))
            s += "<slice>" + "\n".join([row] * grid[1]) + "</slice>"
        return s

    def prompt(self, msgs: list[dict], system_prompt: str = "", max_slice_nums: int = 9,
               use_image_id: bool | None = None, pieces_of=None,
               enable_thinking: bool = False) -> tuple[list[int], list[np.ndarray]]:
        """(input ids, normalised pieces in order) as chat() + the processor build them. `pieces_of(image)`
        replaces the reference slicing (training passes the native slicer, pixel-exact and faster);
        `enable_thinking`: the template's, where the original's chat() passes it (Original.thinking)."""
        use_id = self.original.image_ids if use_image_id is None else use_image_id
        copy, images = [], []
        if system_prompt:
            copy.append({"role": "system", "content": system_prompt})
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
        extra = {"enable_thinking": enable_thinking} if self.original.thinking else {}
        text = self.tok.apply_chat_template(copy, tokenize=False, add_generation_prompt=True, **extra)
        pieces = []
        chunks = text.split(TAG)
        out = chunks[0]
        for i, (img, rest) in enumerate(zip(images, chunks[1:], strict=True)):
            grid, _ = slicing.plan(img.size, max_slice_nums)
            out += self.placeholder(grid, i, use_id) + rest
            if pieces_of is not None:
                pieces += pieces_of(img)
            else:
                pieces += [slicing.normalize(p) for p in slicing.pieces(img, max_slice_nums)]
        return self.tok(out, add_special_tokens=self.original.bos)["input_ids"], pieces


class ReferencePipeline(ReferencePrompt):
    def __init__(self, hf_dir: Path) -> None:
        super().__init__(hf_dir)
        self.llm = load_llm(hf_dir)
        self.vision = reference_vision(hf_dir)

    def embed(self, ids: list[int]) -> torch.Tensor:
        """[len(ids), E]: what the model's embedding layer gives token ids."""
        return self.llm.get_input_embeddings()(torch.tensor([ids]))[0]

    def last_logits(self, emb: torch.Tensor) -> torch.Tensor:
        return self.llm(inputs_embeds=emb[None]).logits[0, -1]

    @torch.no_grad()
    def embeddings(self, ids: list[int], pieces: list[np.ndarray]) -> torch.Tensor:
        emb = self.embed(ids).clone()
        rule = self.original.rule
        if self.original.padded_batch and self.cfg.get("batch_vision_input", True) and pieces:
            feats = [torch.from_numpy(f) for f in self.vision.encode_padded_batch(pieces)]  # all pieces at once
        else:
            feats = [torch.from_numpy(self.vision.encode(p, rule=rule)) for p in pieces]
        starts = {"<image>", "<slice>"} if self.original.slices_in_slice else {"<image>"}
        ends = {"</image>", "</slice>"} if self.original.slices_in_slice else {"</image>"}
        start_ids = {self.tok.convert_tokens_to_ids(t) for t in starts}
        end_ids = {self.tok.convert_tokens_to_ids(t) for t in ends}
        bounds, open_at = [], None
        for i, t in enumerate(ids):
            if t in start_ids:
                open_at = i + 1
            elif t in end_ids and open_at is not None:
                if i - open_at == self.q:  # a piece: query_num placeholder rows
                    bounds.append((open_at, i))
                open_at = None
        assert len(bounds) == len(feats), (len(bounds), len(feats))
        for (a, b), f in zip(bounds, feats, strict=True):
            emb[a:b] = f
        return emb

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        """The answer text as the original chat() returns it for generated `ids` (stop token excluded): the
        tokenizer's decode, special tokens included, stripped; the original first deletes every id 0, which this does
        where id 0 is a special token (4.0's `<unk>`), not where it is a character (Qwen's and Llama 3's "!": not
        deleting it there is a deviation of ours)."""
        if self.tok.convert_ids_to_tokens(0) in self.tok.all_special_tokens:
            ids = [t for t in ids if t != 0]
        return self.tok.decode(ids, skip_special_tokens=skip_special_tokens).strip()

    @torch.no_grad()
    def beam(self, msgs: list[dict], n_tokens: int = 32, num_beams: int = 3, repetition_penalty: float = 1.2,
             min_new_tokens: int = 0, **kw) -> list[int]:
        """chat(sampling=False): transformers' own beam search over the same inputs_embeds (stop token dropped)."""
        ids, pieces = self.prompt(msgs, **kw)
        emb = self.embeddings(ids, pieces)
        extra = {"min_new_tokens": min_new_tokens} if min_new_tokens else {}
        out = self.llm.generate(inputs_embeds=emb[None], attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                num_beams=num_beams, repetition_penalty=repetition_penalty, do_sample=False,
                                max_new_tokens=n_tokens, pad_token_id=0, eos_token_id=sorted(self.stop), **extra)
        got = out[0].tolist()
        return got[:-1] if got and got[-1] in self.stop else got

    penalty_prefix: tuple[int, ...] = ()  # tokens generate()'s repetition penalty sees before the first one

    @torch.no_grad()
    def generate(self, msgs: list[dict], n_tokens: int = 32, repetition_penalty: float = 1.0,
                 **kw) -> tuple[list[int], np.ndarray]:
        """(greedy token ids up to a stop token, first-step logits); the repetition penalty is transformers'
        processor over the generated ids (after `penalty_prefix`), on the raw logits."""
        from transformers import RepetitionPenaltyLogitsProcessor

        penalty = RepetitionPenaltyLogitsProcessor(repetition_penalty)
        ids, pieces = self.prompt(msgs, **kw)
        emb = self.embeddings(ids, pieces)
        out, first = [], None
        for _ in range(n_tokens):
            logits = self.last_logits(emb)
            if first is None:
                first = logits.numpy().copy()
            seen = [*self.penalty_prefix, *out]
            if repetition_penalty != 1.0 and seen:
                logits = penalty(torch.tensor([seen]), logits[None].clone())[0]
            t = int(logits.argmax())
            if t in self.stop:
                break
            out.append(t)
            emb = torch.cat([emb, self.embed([t])])
        return out, first


class ReferencePipeline20(ReferencePipeline):  # MiniCPM-V 2.0: no `version` key
    """MiniCPM-V 2.0 as its original chat() runs it: `<用户>`/`<AI>` turns with no separators and no system
    prompt, each image's placeholder (2.5's layout, 64 rows) then "\n" in its turn (several images: our convention,
    the same rule per image), BOS added by the slow Llama tokenizer in legacy mode, text rows x scale_emb and image
    rows as the resampler gives them, the repetition penalty seeing the dummy BOS of transformers 4.36, and the
    answer decoded without its pad (<unk>) ids."""

    def __init__(self, hf_dir: Path) -> None:
        self.cfg = json.loads((hf_dir / "config.json").read_text())
        self.original = ORIGINALS["2.0"]
        self.tok = load_tokenizer(hf_dir)  # the slow Llama tokenizer, legacy, add_bos_token from tokenizer_config
        self.llm = load_llm(hf_dir)  # the MiniCPM reference
        self.vision = self.load_vision(hf_dir)
        self.q = self.cfg["query_num"]
        self.stop = {self.tok.eos_token_id}
        self.penalty_prefix = (self.tok.bos_token_id,)

    def load_vision(self, hf_dir: Path) -> torch.nn.Module:
        return reference_vision(hf_dir)

    def prompt(self, msgs: list[dict], max_slice_nums: int = 9, **kw) -> tuple[list[int], list[np.ndarray]]:
        assert not kw.get("system_prompt"), "2.0 has no system prompt"
        text, pieces = "", []
        for m in msgs:
            content = m["content"] if isinstance(m["content"], list) else [m["content"]]
            parts = []
            for c in content:
                if isinstance(c, Image.Image):
                    grid, image_pieces = self.image(c, max_slice_nums)
                    parts.append(self.placeholder(grid, 0, False))
                    pieces += image_pieces
                else:
                    parts.append(c)
            text += ("<用户>" if m["role"] == "user" else "<AI>") + "\n".join(parts)
        return self.tok.encode(text + "<AI>"), pieces

    def image(self, img: Image.Image, max_slice_nums: int) -> tuple[list[int] | None, list[np.ndarray]]:
        """(slicing grid, normalised pieces) of one image: the original slicing."""
        grid, _ = slicing.plan(img.size, max_slice_nums)
        return grid, [slicing.normalize(p) for p in slicing.pieces(img, max_slice_nums)]

    def embed(self, ids: list[int]) -> torch.Tensor:
        return self.llm.embed(ids)

    def last_logits(self, emb: torch.Tensor) -> torch.Tensor:
        return self.llm(emb)[-1]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.tok.decode([t for t in ids if t != 0], skip_special_tokens=skip_special_tokens).strip()


def reference_pipeline(hf_dir: Path) -> ReferencePipeline:
    """The original pipeline of a checkpoint: one that names its `version` (ORIGINALS), 2.0's, or 1.0's (2.0's
    config without its slicing keys)."""
    cfg = json.loads((hf_dir / "config.json").read_text())
    if "version" in cfg:
        return ReferencePipeline(hf_dir)
    if "slice_mode" in cfg or "max_slice_nums" in cfg:
        return ReferencePipeline20(hf_dir)
    from .minicpmv1 import ReferencePipeline10

    return ReferencePipeline10(hf_dir)


def prompts(hf_dir: Path, conversations: list[list[dict]]) -> list[list[int]]:
    """The prompt ids of each conversation as the checkpoint's original builds them."""
    ref = reference_pipeline(Path(hf_dir))
    return [ref.prompt(msgs)[0] for msgs in conversations]
