"""MiniCPM-V 1.0 as its original runs it, written from the original `modeling_minicpmv.py` and `resampler.py` of
openbmb/MiniCPM-V (the fact sheet's differences from 2.0, whose reference this extends): each image squashed to one
`image_size` square with Pillow's bicubic on 8-bit pixels (torchvision's Resize of a PIL image), normalised with
mean = std = 0.5; 2.0's timm tower (its 27 x 27 table resized to the square's grid by timm); a resampler whose keys
get the stored 8 x 8 query table resized to the token grid with torch's plain bicubic (`F.interpolate`, no
antialias), E // 128 heads; 2.0's MiniCPM and prompt; chat()'s generation through transformers' own `generate()`
with the original's settings, and its `_decode_text`.

Runs under transformers 4.36 (the version 1.0 pins; tests run it there in a process of its own, see isolated.py)
and under the test extra's transformers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .minicpm import Generator
from .pipeline import ReferencePipeline20
from .timm_vision import ReferenceVision20
from .vision import ReferenceResampler

# chat()'s two generation settings (its `sampling` argument); kwargs override only keys already in the chosen one
BEAM = {"num_beams": 3, "repetition_penalty": 1.2}
SAMPLE = {"top_p": 0.8, "top_k": 100, "temperature": 0.6, "do_sample": True}


class StoredKeysResampler(ReferenceResampler):
    """1.0's `resampler.py`: the keys' position table is the stored one (`pos_embed`, 8 x 8) resized to the grid of
    the N tower tokens (g = int(sqrt(N))) unless g is 8."""

    def key_positions(self, h: int, w: int) -> torch.Tensor:
        g = int(math.sqrt(h * w))
        table = self.query_pos
        side = int(math.sqrt(table.shape[0]))
        if g == side:
            return table
        grid = table.float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
        out = torch.nn.functional.interpolate(grid, size=(g, g), mode="bicubic", align_corners=False)
        return out.permute(0, 2, 3, 1).reshape(g * g, -1).to(table.dtype)


class ReferenceVision10(ReferenceVision20):
    resampler_class = StoredKeysResampler


class ReferencePipeline10(ReferencePipeline20):
    """The prompt is 2.0's with one `<image>` piece per image; no image in chat() crashes the original, and the
    project's convention (`<用户>text<AI>`, several images each as P + "\\n") is what its generate() does."""

    def load_vision(self, hf_dir: Path) -> torch.nn.Module:
        return ReferenceVision10(hf_dir)

    def image(self, img: Image.Image, max_slice_nums: int) -> tuple[None, list[np.ndarray]]:
        side = int(self.cfg["image_size"])
        rgb = np.asarray(img.convert("RGB").resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32)
        x = torch.from_numpy(rgb).permute(2, 0, 1) / 255.0  # ToTensor
        return None, [((x - 0.5) / 0.5).numpy()]  # Normalize(mean 0.5, std 0.5)

    def chat(self, msgs: list[dict], sampling: bool = False, max_new_tokens: int = 2048, **kwargs) -> dict:
        """What the original chat() computes: {"ids": the prompt's ids, "pieces": each image's resampler output,
        "tokens": generate()'s result after its dummy BOS, "text": the answer `_decode_text` returns}. kwargs
        override only keys of the chosen setting, as the original; greedy is sampling=False, num_beams=1,
        repetition_penalty=1.0."""
        settings = dict(SAMPLE if sampling else BEAM)
        settings.update({k: v for k, v in kwargs.items() if k in settings})
        ids, pieces = self.prompt(msgs)
        feats = [self.vision.encode(p) for p in pieces]
        emb = self.embeddings(ids, pieces)
        gen = Generator(self.llm, len(self.tok), self.tok.bos_token_id, self.tok.eos_token_id, 0)
        out = gen.run(emb, max_new_tokens, **settings)
        return {"ids": ids, "pieces": feats, "tokens": out, "text": self.decode_text(out)}

    def decode_text(self, out: list[int]) -> str:
        """The original `_decode_text`: every 0 dropped, a leading BOS and a trailing EOS dropped, decoded with
        special tokens kept, stripped."""
        ids = [t for t in out if t != 0]
        if ids and ids[0] == self.tok.bos_token_id:
            ids = ids[1:]
        if ids and ids[-1] == self.tok.eos_token_id:
            ids = ids[:-1]
        return self.tok.decode(ids).strip()


def original_chats(hf_dir: Path, cases: list[tuple[list[dict], dict]]) -> list[dict]:
    """chat(msgs, **kwargs) of the reference for each case (what tests run under transformers 4.36)."""
    ref = ReferencePipeline10(Path(hf_dir))
    return [ref.chat(msgs, **kw) for msgs, kw in cases]
