"""OmniLMM-12B's original inference, for the parity tests: the original code (OpenBMB/MiniCPM-V@2553592: chat.py's
`OmniLMM12B`, `omnilmm/model/omnilmm.py`, `resampler.py`, `utils.py`, `train/train_utils.py`) transcribed from its
description in docs/sources.md's fact sheet, on the libraries it runs: timm 0.9.10's own `eva02_enormous_patch14_
clip_224` builder (given a tiny checkpoint's widths), transformers 4.36's own MistralForCausalLM, generate() and fast
Llama tokenizer converted from tokenizer.model. Runs under transformers 4.36 (reference/isolated.py).

What is transcribed: the tower's construction and use (blocks[-1] replaced by Identity, forward_features, the class
token dropped), the resampler (its key table upsampled from the stored query table with plain bicubic), the
pixel transform (PIL bicubic squash, CLIP mean/std, the .half() cast), the placeholder expansion, the fixed system
message, the embedding substitution and decode(). Everything else is the libraries' own code."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

SYSTEM = ("You are an artificial intelligence assistant, which gives helpful, detailed, and polite answers to the "
          "human's questions.")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class Identity(nn.Identity):
    """The block that replaces the tower's last one (timm's Eva passes each block a `rope` keyword)."""

    def forward(self, input: torch.Tensor, **kwargs: object) -> torch.Tensor:
        return super().forward(input)


def get_abs_pos(abs_pos: torch.Tensor, tgt_size: int) -> torch.Tensor:
    src, tgt = int(math.sqrt(abs_pos.size(0))), int(math.sqrt(tgt_size))
    if src == tgt:
        return abs_pos
    grid = abs_pos.float().reshape(1, src, src, -1).permute(0, 3, 1, 2)
    out = F.interpolate(grid, size=(tgt, tgt), mode="bicubic", align_corners=False)
    return out.permute(0, 2, 3, 1).flatten(0, 2).to(abs_pos.dtype)


class Resampler(nn.Module):
    def __init__(self, grid_size: int, embed_dim: int, num_heads: int, kv_dim: int) -> None:
        super().__init__()
        self.num_queries = grid_size**2
        self.pos_embed = nn.Parameter(torch.zeros(self.num_queries, embed_dim), requires_grad=False)
        self.query = nn.Parameter(torch.zeros(self.num_queries, embed_dim))
        self.kv_proj = nn.Linear(kv_dim, embed_dim, bias=False)
        self.attn = nn.MultiheadAttention(embed_dim, num_heads)
        self.ln_q = nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_kv = nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_post = nn.LayerNorm(embed_dim, eps=1e-6)
        self.proj = nn.Parameter(torch.zeros(embed_dim, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos_embed = get_abs_pos(self.pos_embed, x.size(1))
        x = self.ln_kv(self.kv_proj(x)).permute(1, 0, 2)
        n = x.shape[1]
        q = self.ln_q(self.query)
        out = self.attn(q.unsqueeze(1).repeat(1, n, 1) + self.pos_embed.unsqueeze(1), x + pos_embed.unsqueeze(1),
                        x)[0]
        return self.ln_post(out.permute(1, 0, 2)) @ self.proj


class Original:
    """The model pieces the original builds, loaded from the checkpoint folder (float32)."""

    def __init__(self, folder: str) -> None:
        import timm
        from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

        self.folder = Path(folder)
        cfg = json.loads((self.folder / "config.json").read_text())
        self.cfg = cfg
        vc = cfg.get("vision_config") or {}
        dims = {}
        if vc:  # a tiny tower: timm's EVA02-E builder with the checkpoint's widths
            dims = {"embed_dim": vc["hidden_size"], "depth": vc["num_hidden_layers"],
                    "num_heads": vc["num_attention_heads"], "mlp_ratio": vc["intermediate_size"] / vc["hidden_size"]}
        self.tower = timm.create_model("eva02_enormous_patch14_clip_224", pretrained=False, num_classes=0,
                                       dynamic_img_size=True, dynamic_img_pad=True, **dims)
        self.tower.blocks[-1] = Identity()
        E = cfg["hidden_size"]
        self.resampler = Resampler(int(math.sqrt(cfg["num_query"])), E, E // 128, self.tower.embed_dim)
        state = torch.load(self.folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        state = {k: v.float() for k, v in state.items()}

        def part(prefix: str) -> dict:
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

        self.tower.load_state_dict(part("model.vision_tower."), strict=True)
        self.resampler.load_state_dict(part("model.resampler."), strict=True)
        llm_cfg = MistralConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")})
        self.llm = MistralForCausalLM(llm_cfg)
        llm_state = {k: v for k, v in state.items() if not k.startswith(("model.vision_tower.", "model.resampler."))}
        self.llm.load_state_dict(llm_state, strict=True)
        for m in (self.tower, self.resampler, self.llm):
            m.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder), model_max_length=2048)
        self.im_patch, self.im_start, self.im_end = (self.tokenizer.convert_tokens_to_ids(t)
                                                     for t in ("<im_patch>", "<im_start>", "<im_end>"))

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """build_transform(is_train=False, std_mode='OPENAI_CLIP'), then decode()'s .half()."""
        size = self.cfg["image_size"]
        img = image.convert("RGB").resize((size, size), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255)
        x = (x - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)
        return x.unsqueeze(0).half().float()

    @torch.no_grad()
    def embed_image(self, image: Image.Image) -> torch.Tensor:
        feats = self.tower.forward_features(self.pixels(image))[:, 1:]  # the class token dropped
        return self.resampler(feats)[0]

    def prompt(self, msgs: list[dict]) -> str:
        """expand_question_into_multimodal on the first message, the system message, Zephyr's template."""
        msgs = [dict(m) for m in msgs]
        placeholder = "<im_start>" + "<im_patch>" * self.cfg["num_query"] + "<im_end>"
        if "<image>" in msgs[0]["content"]:
            msgs[0]["content"] = msgs[0]["content"].replace("<image>", placeholder)
        else:
            msgs[0]["content"] = placeholder + "\n" + msgs[0]["content"]
        msgs = [{"role": "system", "content": SYSTEM}, *msgs]
        return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    @torch.no_grad()
    def chat(self, image: Image.Image, msgs: list[dict], max_new_tokens: int) -> dict:
        """The original chat() with greedy decoding (do_sample=False, the sampling arguments dropped)."""
        text = self.prompt(msgs)
        ids = self.tokenizer(text, max_length=2048, truncation=True)["input_ids"]
        input_ids = torch.tensor([ids])
        emb = self.llm.model.embed_tokens(input_ids)
        rows = self.embed_image(image)
        starts = (input_ids[0] == self.im_start).nonzero().flatten().tolist()
        for p in starts:  # the original's substitution (one image)
            n = rows.shape[0]
            if input_ids[0, p + n + 1] != self.im_end:
                raise ValueError("the image patch tokens do not fit")
            emb[0, p + 1: p + 1 + n] = rows
        out = self.llm.generate(inputs_embeds=emb, attention_mask=torch.ones_like(input_ids), do_sample=False,
                                max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.eos_token_id)
        seq = out[0].tolist()
        return {"ids": ids, "embeddings": rows.numpy(), "tokens": seq,
                "text": self.tokenizer.decode(seq, skip_special_tokens=True).strip()}

    @torch.no_grad()
    def text_chat(self, msgs: list[dict], max_new_tokens: int) -> dict:
        """A conversation without an image (the sheet's only original path: the plain LLM on the prompt without a
        placeholder, which gives generate()'s tokens with ids as input)."""
        msgs = [{"role": "system", "content": SYSTEM}, *msgs]
        text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        ids = self.tokenizer(text, max_length=2048, truncation=True)["input_ids"]
        out = self.llm.generate(input_ids=torch.tensor([ids]), do_sample=False, max_new_tokens=max_new_tokens,
                                pad_token_id=self.tokenizer.eos_token_id)
        seq = [1, *out[0].tolist()[len(ids):]]  # as from embeddings: the dummy BOS, then the new tokens
        return {"ids": ids, "embeddings": None, "tokens": seq,
                "text": self.tokenizer.decode(seq, skip_special_tokens=True).strip()}


def original_chats(folder: str, cases: list[tuple[object, list[dict], int]]) -> list[dict]:
    """Each case (image or None, messages with string contents, max_new_tokens) as the original runs it."""
    torch.manual_seed(0)
    o = Original(folder)
    return [o.chat(img, msgs, n) if img is not None else o.text_chat(msgs, n) for img, msgs, n in cases]


def tower_positions(folder: str, side: int) -> np.ndarray:
    """timm's own resample_abs_pos_embed of the checkpoint's tower table to side x side, as the tower runs it."""
    from timm.layers import resample_abs_pos_embed

    state = torch.load(Path(folder) / "pytorch_model.bin", map_location="cpu", weights_only=True)
    table = state["model.vision_tower.pos_embed"].float()
    return resample_abs_pos_embed(table, (side, side), num_prefix_tokens=1)[0].numpy()
