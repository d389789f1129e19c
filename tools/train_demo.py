#!/usr/bin/env python3
"""Train the demo model: a tiny MiniCPM-V 2.6 (SigLIP-NaViT tower, perceiver resampler, Qwen2 language model, the
tiny BPE tokenizer) on the synthetic "shapes" task (minicpmv_edge/shapes_task.py), on the CPU, deterministically.

    python tools/train_demo.py --eval-every 250    # the committed run (its log: data/demo/train_log.txt)
    python tools/train_demo.py --vision-steps 20 --steps 20 --out /tmp/try

The model starts from the `demo-2.6` recipe (the original Hugging Face layout; normal(0, 0.02) weights) and is
trained in two stages. Stage 1 trains the vision tower and the resampler alone, through auxiliary heads (not
saved): one reads every patch's colour, each shape's kind and each shape's top point from the tower's output on the
overview piece; one reads from each resampler token the colours and kinds its attention covers (the queries start
looking at places: spatial_queries).
Stage 2 trains everything end to end with the original 2.6 processing: pictures sliced as the original processor
slices them (our C++ slicer, pixel-exact), the chat template with the `<image_id>` / overview / slice layout, image
features in place of the `<unk>` rows, the loss on the answer and its `<|im_end|>`; each picture is also asked
"Describe the image." (every shape, left to right), and the auxiliary loss stays on. For speed the tower and the
resampler get gradients through the overview piece of each picture only (it shows every shape whole); the slices
go through them too, and the language model learns from everything it is given.

Writes into --out: the checkpoint (config, tokenizer, bf16 model.safetensors), `train_log.txt` (the command,
loss, held-out accuracy, time) and `loss.png`. The same command, seed, thread count and library versions give
the same checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from transformers import Qwen2Config, Qwen2ForCausalLM
from transformers.models.idefics2.configuration_idefics2 import Idefics2VisionConfig
from transformers.models.idefics2.modeling_idefics2 import Idefics2VisionTransformer

from minicpmv_edge import recipes
from minicpmv_edge.convert.mmproj import sincos_2d
from minicpmv_edge.shapes_task import COLORS, KINDS, Q_DESCRIBE, SHAPES, Item, Picture, dataset, describe, item, score
from minicpmv_edge.slicer import SliceConfig, slice_image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from reference.pipeline import ReferencePrompt
from reference.vision import position_ids_hf

TRAIN_SEED, VAL_SEED = 1000, 2000  # benchmarks/bench_accuracy.py holds out another seed


class Resampler(torch.nn.Module):
    """The original resampler.py, trainable: LN_q(query) cross-attends to LN_kv(kv_proj(x)) (+ the 2-D sin-cos
    code of the piece's grid on the keys), E / 128 heads, then LN_post and `@ proj`. Parameter names as stored."""

    def __init__(self, queries: int, dim: int, kv_dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.query = torch.nn.Parameter(torch.zeros(queries, dim))
        self.kv_proj = torch.nn.Linear(kv_dim, dim, bias=False)
        self.attn = torch.nn.MultiheadAttention(dim, dim // 128)
        self.ln_q, self.ln_kv, self.ln_post = (torch.nn.LayerNorm(dim, eps=1e-6) for _ in range(3))
        self.proj = torch.nn.Parameter(torch.zeros(dim, dim))

    def forward(self, x: torch.Tensor, h: int, w: int, weights: bool = False):
        """x [B, h*w, kv_dim] -> [B, Q, dim] (and the attention [B, Q, h*w], averaged over heads, if asked)."""
        kv = self.ln_kv(self.kv_proj(x)).transpose(0, 1)  # [L, B, E]
        pos = torch.from_numpy(sincos_2d(self.dim, h, w))[:, None]
        q = self.ln_q(self.query)[:, None].expand(-1, x.shape[0], -1)
        out, attn = self.attn(q, kv + pos, kv, need_weights=weights)
        out = self.ln_post(out.transpose(0, 1)) @ self.proj
        return (out, attn) if weights else out


class Block(torch.nn.Module):
    """A SigLIP encoder layer (pre-norm attention, then a tanh-GELU MLP), with the parameter names stored."""

    def __init__(self, dim: int, ffn: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.self_attn = torch.nn.Module()
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self.self_attn, n, torch.nn.Linear(dim, dim))
        self.mlp = torch.nn.Module()
        self.mlp.fc1, self.mlp.fc2 = torch.nn.Linear(dim, ffn), torch.nn.Linear(ffn, dim)
        self.layer_norm1, self.layer_norm2 = (torch.nn.LayerNorm(dim, eps=1e-6) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.self_attn
        B, L, D = x.shape
        y = self.layer_norm1(x)
        q, k, v = (p(y).view(B, L, self.heads, -1).transpose(1, 2) for p in (a.q_proj, a.k_proj, a.v_proj))
        x = x + a.out_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, L, D))
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.layer_norm2(x)), approximate="tanh"))


class Tower(torch.nn.Module):
    """The SigLIP-NaViT tower of 2.6 (transformers' Idefics2VisionTransformer, parameter names and position rule
    alike: a piece of h x w patches takes the bucketized ids of position_ids_hf), written with torch's fused
    attention because the training time goes here. check_tower() proves it equal to transformers' class."""

    def __init__(self, vc: dict) -> None:
        super().__init__()
        D, p = vc["hidden_size"], vc["patch_size"]
        self.side = vc["image_size"] // p
        self.embeddings = torch.nn.Module()
        self.embeddings.patch_embedding = torch.nn.Conv2d(3, D, p, p)
        self.embeddings.position_embedding = torch.nn.Embedding(self.side**2, D)
        self.encoder = torch.nn.Module()
        self.encoder.layers = torch.nn.ModuleList(Block(D, vc["intermediate_size"], vc["num_attention_heads"])
                                                  for _ in range(vc["num_hidden_layers"]))
        self.post_layernorm = torch.nn.LayerNorm(D, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, 3, H, W] -> [B, (H/14)*(W/14), D] after the post-LayerNorm."""
        e = self.embeddings.patch_embedding(x)
        h, w = e.shape[2:]
        e = e.flatten(2).transpose(1, 2) + self.embeddings.position_embedding(position_ids_hf(h, w, self.side))
        for layer in self.encoder.layers:
            e = layer(e)
        return self.post_layernorm(e)


def check_tower(tower: Tower, vc: dict) -> None:
    """Our tower and transformers' Idefics2 tower, same weights, same output on a non-square piece."""
    ref = Idefics2VisionTransformer(Idefics2VisionConfig(
        hidden_size=vc["hidden_size"], intermediate_size=vc["intermediate_size"],
        num_hidden_layers=vc["num_hidden_layers"], num_attention_heads=vc["num_attention_heads"],
        patch_size=vc["patch_size"], image_size=vc["image_size"], hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6))
    ref.load_state_dict(tower.state_dict(), strict=True)
    x = torch.randn(1, 3, 14 * 23, 14 * 31, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = ref(pixel_values=x, patch_attention_mask=torch.ones(1, 23, 31, dtype=torch.bool)).last_hidden_state
        got = tower(x)
    err = float((got - want).abs().max())
    assert err < 1e-4, f"the training tower differs from transformers' Idefics2 tower by {err}"


class DemoModel(torch.nn.Module):
    """vpm (the 2.6 tower) + resampler + llm (Qwen2ForCausalLM): the original checkpoint's three parts."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.vpm = Tower(cfg["vision_config"])
        self.resampler = Resampler(cfg["query_num"], cfg["hidden_size"], cfg["vision_config"]["hidden_size"])
        keep = {k: v for k, v in cfg.items() if k not in ("architectures", "auto_map", "model_type", "vision_config",
                                                           "slice_config", "version", "_name_or_path")}
        lcfg = Qwen2Config(**keep)
        lcfg._attn_implementation = "sdpa"
        self.llm = Qwen2ForCausalLM(lcfg)

    def encode_pieces(self, pieces: list[np.ndarray], trained: list[bool]) -> tuple[torch.Tensor,
                                                                                     dict[int, torch.Tensor]]:
        """([n, Q, E] resampler outputs, {piece: tower output} for the pieces with gradients); pieces of one size
        run together, with gradients where asked."""
        out: list[torch.Tensor | None] = [None] * len(pieces)
        towers: dict[int, torch.Tensor] = {}
        groups: dict[tuple[int, int, bool], list[int]] = {}
        for i, p in enumerate(pieces):
            groups.setdefault((p.shape[1], p.shape[2], trained[i]), []).append(i)
        for (H, W, grad), idx in groups.items():
            x = torch.from_numpy(np.stack([pieces[i] for i in idx]))
            h, w = H // 14, W // 14
            with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
                tower = self.vpm(x)
                feats = self.resampler(tower, h, w)
            for j, f, t in zip(idx, feats, tower, strict=True):
                out[j] = f
                if grad:
                    towers[j] = t
        return torch.stack(out), towers  # type: ignore[arg-type]


class Prompter:
    """Conversations -> training inputs, through the test suite's reference of the original 2.6 prompt building
    (tests/reference/pipeline.py: chat template, placeholders, the original slicing and normalisation)."""

    def __init__(self, hf_dir: Path) -> None:
        self.ref = ReferencePrompt(hf_dir)
        tok = self.ref.tok
        self.tok, self.q = tok, self.ref.q
        self.unk = tok.convert_tokens_to_ids("<unk>")
        self.im_end = tok.convert_tokens_to_ids("<|im_end|>")
        self.stops = sorted(self.ref.stop)
        self.overview_start = tok.convert_tokens_to_ids("<image>")
        self.piece_starts = {self.overview_start, tok.convert_tokens_to_ids("<slice>")}
        self.slicing = SliceConfig(n_threads=1)

    def encode(self, msgs: list[dict], answer: str | None = None, slicing: bool = True
               ) -> tuple[list[int], list[np.ndarray], list[bool], int]:
        """(ids, pieces, whether each piece is an overview, where the answer starts); slicing=False: ids only."""
        ids, pieces = self.ref.prompt(msgs, pieces_of=lambda img: slice_image(img, self.slicing).pieces()
                                      if slicing else [])
        overview = [t == self.overview_start for t in ids if t in self.piece_starts]
        n_prompt = len(ids)
        if answer is not None:
            ids = ids + self.tok(answer, add_special_tokens=False)["input_ids"] + [self.im_end]
        return ids, pieces, overview, n_prompt


def init_weights(model: DemoModel, std: float = 0.02) -> None:
    """A training start (the recipe's random weights are scaled for numeric tests, not for learning): normal(0,
    0.02) matrices and embeddings, zero biases, unit norms; the resampler's output projection E^-0.5 * randn, as
    the original initialises it."""
    g = torch.Generator().manual_seed(0)
    for name, t in model.named_parameters():
        with torch.no_grad():
            if name == "resampler.proj":
                t.copy_(torch.randn(t.shape, generator=g) * t.shape[0] ** -0.5)
            elif "norm" in name or name.startswith("resampler.ln_") or "layernorm" in name:
                t.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                t.zero_()
            else:
                t.copy_(torch.randn(t.shape, generator=g) * std)


def spatial_queries(res: Resampler, scale: float = 1.8) -> None:
    """Start the resampler's queries looking at places: query i at a point of a 4 x (Q/4) grid over the first
    ~34 x 40 patches, its query vector the point's 2-D sin-cos code, W_q = W_k = a selection of that code's middle
    frequencies (both axes in each head), and LN_kv's gain 0.25 so the keys' position part dominates. Each query
    then starts with ~80% of one head's attention within 4 patches of its point, so the tokens tell the shapes
    apart from the first step; with random queries every token starts as the same mean over the piece, and the
    model has to discover places on its own (it did not within our time budget)."""
    dim, q = res.dim, res.query.shape[0]
    omega = 1.0 / 10000.0 ** (np.arange(dim // 4) / (dim / 4))
    quarter, head = dim // 4, 128

    def code(y: float, x: float) -> np.ndarray:  # as sincos_2d: [sin x, cos x, sin y, cos y]
        return np.concatenate([np.sin(x * omega), np.cos(x * omega), np.sin(y * omega), np.cos(y * omega)])

    sel = np.zeros((dim, dim), np.float32)
    used: list[int] = []
    for h in range(dim // head):
        f = np.arange(6 + 4 * h, 6 + 4 * h + head // 4)  # head // 4 frequencies per axis, sin and cos
        src = np.concatenate([f, quarter + f, 2 * quarter + f, 3 * quarter + f])
        sel[h * head + np.arange(head), src] = scale
        used += src.tolist()
    keep = np.unique(used)
    rest = np.setdiff1d(np.arange(dim), keep)
    rows, cols = 4, max(1, q // 4)
    points = [(y, x) for y in np.linspace(3, 33, rows) for x in np.linspace(2, 38, cols)]
    queries = np.zeros((q, dim), np.float32)
    for i, (y, x) in enumerate(points[:q]):
        v = np.zeros(dim)
        v[keep] = code(y, x)[keep]
        v[rest] = -v[keep].sum() / max(1, len(rest))  # zero mean: LN_q keeps the code's direction
        queries[i] = v
    with torch.no_grad():
        res.query.copy_(torch.from_numpy(queries))
        w = res.attn.in_proj_weight
        w[:dim].copy_(torch.from_numpy(sel))
        w[dim : 2 * dim].copy_(torch.from_numpy(sel))
        res.ln_kv.weight.fill_(0.25)


def embed(model: DemoModel, ids: list[int], feats: torch.Tensor, unk: int) -> torch.Tensor:
    """[len(ids), E]: token embeddings with the image features over the `<unk>` rows, in order."""
    t = torch.tensor(ids)
    e = model.llm.get_input_embeddings()(t)
    rows = (t == unk).nonzero()[:, 0]
    assert len(rows) == feats.shape[0] * feats.shape[1], (len(rows), feats.shape)
    return e.index_put((rows,), feats.reshape(-1, feats.shape[-1]))


AUX_OUT = 1 + len(COLORS) + 1 + len(SHAPES)  # per patch: background or colour, anchor; per shape: its kind


def patch_classes(pic: Picture, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per patch of the picture's h x w overview grid [h*w]: which shape (0: none, i + 1: shapes[i]), its colour
    (0: background, 1 + index in COLORS) and its kind (0: background, 1 + index in SHAPES)."""
    obj = torch.from_numpy(np.asarray(pic.labels.resize((w, h), Image.NEAREST), dtype=np.int64).reshape(-1))
    colour, kind = torch.zeros_like(obj), torch.zeros_like(obj)
    for i, sh in enumerate(pic.shapes):
        colour[obj == i + 1] = 1 + list(COLORS).index(sh.color)
        kind[obj == i + 1] = 1 + SHAPES.index(sh.kind)
    return obj, colour, kind


def aux_loss(aux: torch.nn.Linear, tower: torch.Tensor, pic: Picture, h: int, w: int,
             classes: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None, with_hits: bool = False):
    """Dense supervision of the tower's output [h*w, D] on a picture's h x w overview piece, through a head that is not
    part of the checkpoint: every patch's colour (or background), the patch of each shape's anchor (one per shape:
    what counting needs) and each shape's kind from the mean of its patches (what a query attending to it sees)."""
    W, H = pic.image.size
    obj, colour, _ = classes if classes is not None else patch_classes(pic, h, w)
    anchors = torch.zeros(h, w)
    kinds, pooled = [], []
    out = aux(tower)
    for i, sh in enumerate(pic.shapes):
        mine = obj == i + 1
        ax, ay = sh.anchor
        anchors[min(h - 1, int(ay * h / H)), min(w - 1, int(ax * w / W))] = 1.0
        if mine.any():
            pooled.append(aux(tower[mine].mean(0))[-len(SHAPES):])
            kinds.append(SHAPES.index(sh.kind))
    n = 1 + len(COLORS)
    loss = F.cross_entropy(out[:, :n], colour) + F.binary_cross_entropy_with_logits(
        out[:, n], anchors.reshape(-1), pos_weight=torch.tensor(50.0))
    if kinds:
        loss = loss + F.cross_entropy(torch.stack(pooled), torch.tensor(kinds))
    if with_hits:  # whether each shape's kind was read right (stage 1 logs it)
        return loss, [int(p.argmax()) == k for p, k in zip(pooled, kinds, strict=True)]
    return loss


def loss_of(model: DemoModel, aux: torch.nn.Linear, pr: Prompter, batch: list[Item]
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean cross-entropy over the answer tokens, the same over the descriptions, the auxiliary per-patch loss).
    Each conversation runs alone (no padding: their lengths differ by up to 3x) and the head is applied to the answer
    rows only. Every picture of the batch is also asked Q_DESCRIBE, with its pieces' features reused (the tower's
    cost is paid once): naming every shape's colour and kind, in order, is four times the signal of a short answer
    and teaches the resampler's queries to keep the shapes apart. The auxiliary head (not part of the checkpoint)
    reads the tower's output on each overview piece and predicts every patch's class and the shapes' anchors."""
    encoded = [pr.encode(it.messages, it.answer) for it in batch]
    pieces = [p for e in encoded for p in e[1]]
    feats, towers = model.encode_pieces(pieces, [o for e in encoded for o in e[2]])

    def answer_loss(ids: list[int], f: torch.Tensor, n_prompt: int) -> tuple[torch.Tensor, int]:
        x = embed(model, ids, f, pr.unk)
        hidden = model.llm.model(inputs_embeds=x[None]).last_hidden_state[0, n_prompt - 1 : -1]
        target = torch.tensor(ids[n_prompt:])
        return F.cross_entropy(model.llm.lm_head(hidden), target, reduction="sum"), len(target)

    sums = {"answer": [torch.zeros(()), 0], "describe": [torch.zeros(()), 0], "aux": [torch.zeros(()), 0]}

    def add(key: str, value: torch.Tensor, n: int) -> None:
        sums[key][0] = sums[key][0] + value
        sums[key][1] += n

    k = 0
    for it, (ids, ps, overview, n_prompt) in zip(batch, encoded, strict=True):
        add("answer", *answer_loss(ids, feats[k : k + len(ps)], n_prompt))
        starts = [i for i, o in enumerate(overview) if o] + [len(ps)]
        for pic, a, b in zip(it.pictures, starts[:-1], starts[1:], strict=True):
            add("aux", aux_loss(aux, towers[k + a], pic, ps[a].shape[1] // 14, ps[a].shape[2] // 14), 1)
            d_ids, _, _, d_prompt = pr.encode([{"role": "user", "content": [pic.image, Q_DESCRIBE]}], describe(pic),
                                              slicing=False)
            add("describe", *answer_loss(d_ids, feats[k + a : k + b], d_prompt))
        k += len(ps)
    return tuple(total / max(1, n) for total, n in sums.values())  # type: ignore[return-value]


TOKEN_OUT = 1 + len(COLORS) + 1 + len(SHAPES)  # per resampler token: what it looks at (colour, kind)


def token_loss(head: torch.nn.Linear, feats: torch.Tensor, attn: torch.Tensor,
               classes: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Each resampler output token [Q, E] must say, linearly, what its attention [Q, h*w] covers: the mix of
    colours (background included) and of shape kinds. This makes the tokens readable before the language model
    exists; with random projections they hold the same facts too weakly for it to find them in our time budget."""
    _, colour, kind = classes  # patch_classes() of the piece
    a = attn.detach()
    n = 1 + len(COLORS)
    out = head(feats)
    want_c = a @ F.one_hot(colour, n).float()
    want_k = a @ F.one_hot(kind, 1 + len(SHAPES)).float()
    return -(want_c * F.log_softmax(out[:, :n], -1)).sum(-1).mean() - (
        want_k * F.log_softmax(out[:, n:], -1)).sum(-1).mean()


def pretrain_vision(model: DemoModel, aux: torch.nn.Linear, tokens: torch.nn.Linear, steps: int, batch: int,
                    lr: float, rng: np.random.Generator, note) -> None:
    """Stage 1: the tower and the resampler alone, on the overview pieces of task pictures, with the auxiliary
    per-patch and per-token losses only. A tower trained from scratch learns shapes in ~1,000 steps of this (0.3 s
    each) but hardly at all when the answers are its only signal, which cost 3x more per step; the language model
    then starts from tokens that already say, each for its part of the picture, which colours and shapes are there."""
    if steps <= 0:
        return
    slicing = SliceConfig(n_threads=1)
    params = [*model.vpm.parameters(), *model.resampler.parameters(), *aux.parameters(), *tokens.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    t0, losses, token_losses, right = time.perf_counter(), [], [], []
    for step in tqdm(range(steps), desc="vision", unit="step", file=sys.stderr):
        pics = [p for k in rng.integers(0, len(KINDS), batch) for p in item(rng, KINDS[int(k)]).pictures]
        total, total_tokens = torch.zeros(()), torch.zeros(())
        for pic in pics:
            ov = slice_image(pic.image, slicing).pieces()[0]
            h, w = ov.shape[1] // 14, ov.shape[2] // 14
            tower = model.vpm(torch.from_numpy(ov)[None])
            classes = patch_classes(pic, h, w)
            loss, hits = aux_loss(aux, tower[0], pic, h, w, classes, with_hits=True)
            feats, attn = model.resampler(tower, h, w, weights=True)
            total = total + loss
            total_tokens = total_tokens + token_loss(tokens, feats[0], attn[0], classes)
            right.extend(hits)
        opt.zero_grad()
        ((total + total_tokens) / len(pics)).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(total.item() / len(pics))
        token_losses.append(total_tokens.item() / len(pics))
        if step % 50 == 0 or step == steps - 1:
            note(f"vision step {step} aux {np.mean(losses[-50:]):.4f} tokens {np.mean(token_losses[-50:]):.4f} "
                 f"shape accuracy {np.mean(right[-400:]):.3f} {time.perf_counter() - t0:.0f} s")


@torch.no_grad()
def answer(model: DemoModel, pr: Prompter, msgs: list[dict], max_new_tokens: int = 24) -> str:
    """Greedy, until a stop token: the text as the original chat() returns it."""
    ids, pieces, overview, _ = pr.encode(msgs)
    x = embed(model, ids, model.encode_pieces(pieces, overview)[0], pr.unk)
    out = model.llm.generate(inputs_embeds=x[None], attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=pr.stops, pad_token_id=0)
    got = [t for t in out[0].tolist() if t not in pr.stops]
    return pr.tok.decode(got).strip()


def accuracy(model: DemoModel, pr: Prompter, items: list[Item]) -> dict[str, float]:
    model.eval()
    answers = [answer(model, pr, it.messages) for it in items]
    model.train()
    return score(items, answers)


def plot(losses: list[float], path: Path) -> None:
    """The training loss (mean of every 20 steps), as a PNG."""
    w, h, pad = 800, 400, 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    pts = [float(np.mean(losses[i : i + 20])) for i in range(0, len(losses), 20)]
    if len(pts) > 1:
        top = max(pts)
        xy = [(pad + (w - 2 * pad) * i / (len(pts) - 1), h - pad - (h - 2 * pad) * v / top) for i, v in enumerate(pts)]
        d.line(xy, fill=(30, 70, 200), width=2)
        d.text((pad, 10), f"training loss (max {top:.2f}, last {pts[-1]:.3f}), {len(losses)} steps", fill="black")
    d.line([(pad, h - pad), (w - pad, h - pad)], fill="black")
    d.line([(pad, pad), (pad, h - pad)], fill="black")
    img.save(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "python" / "minicpmv_edge" /
                                         "data" / "demo"), help="checkpoint folder (replaced)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--val", type=int, default=100, help="held-out questions scored at the end")
    ap.add_argument("--seed", type=int, default=TRAIN_SEED)
    ap.add_argument("--eval-every", type=int, default=0, help="also score 50 held-out questions every N steps")
    ap.add_argument("--init", choices=("normal", "recipe"), default="normal",
                    help="start from normal(0, 0.02) weights or the recipe's own random weights")
    ap.add_argument("--aux", type=float, default=1.0, help="weight of the auxiliary per-patch loss")
    ap.add_argument("--vision-steps", type=int, default=1500, help="stage 1: steps training the tower alone")
    ap.add_argument("--describe", type=float, default=1.0, help="weight of the description loss")
    ap.add_argument("--vision-state", default="", help="stage 1's result: loaded if the file exists, else saved")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (part of what makes a run reproducible)")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)  # the thread count changes float summation order
    torch.use_deterministic_algorithms(True)
    out = Path(args.out)
    work = out.with_name(out.name + ".training")
    start = recipes.write_checkpoint("demo-2.6", work)  # the original layout, random weights
    cfg = json.loads((start / "config.json").read_text())
    model = DemoModel(cfg)
    state = {k: v.float() for k, v in load_file(start / "model.safetensors").items()}
    model.load_state_dict(state, strict=True)  # proves the names and shapes match the original layout
    if args.init == "normal":
        init_weights(model)
        spatial_queries(model.resampler)
    check_tower(model.vpm, cfg["vision_config"])
    pr = Prompter(start)
    aux = torch.nn.Linear(cfg["vision_config"]["hidden_size"], AUX_OUT)
    tokens = torch.nn.Linear(cfg["hidden_size"], TOKEN_OUT)
    rng = np.random.default_rng(args.seed)
    log: list[str] = []

    def note(line: str) -> None:  # the log is written as it grows, so a long run can be followed
        log.append(line)
        (work / "train_log.txt").write_text("\n".join(log) + "\n")

    note(f"python tools/train_demo.py --vision-steps {args.vision_steps} --steps {args.steps} --batch {args.batch} "
         f"--lr {args.lr} --seed {args.seed} --init {args.init} --aux {args.aux} --describe {args.describe} "
         f"--threads {args.threads}")
    note(f"torch {torch.__version__}, {sum(p.numel() for p in model.parameters())} parameters")
    t0 = time.perf_counter()
    if args.vision_state and Path(args.vision_state).exists():  # experiments on stage 2 skip stage 1
        saved = torch.load(args.vision_state)
        model.vpm.load_state_dict(saved["vpm"])
        model.resampler.load_state_dict(saved["resampler"])
        aux.load_state_dict(saved["aux"])
        rng.bit_generator.state = saved["rng"]
        note(f"stage 1 loaded from {args.vision_state}")
    else:
        pretrain_vision(model, aux, tokens, args.vision_steps, args.batch, args.lr, rng, note)
        if args.vision_state:
            torch.save({"vpm": model.vpm.state_dict(), "resampler": model.resampler.state_dict(),
                        "aux": aux.state_dict(), "rng": rng.bit_generator.state},
                       args.vision_state)
    opt = torch.optim.AdamW([*model.parameters(), *aux.parameters()], lr=args.lr, weight_decay=0.01,
                            betas=(0.9, 0.98))
    warm = max(1, args.steps // 20)

    def lr_scale(s: int) -> float:  # linear warm-up, then cosine down to 5%
        return min(1.0, (s + 1) / warm) * (0.05 + 0.475 * (1 + math.cos(math.pi * min(1.0, s / args.steps))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_scale)
    losses: list[float] = []
    aux_losses: list[float] = []
    describe_losses: list[float] = []
    model.train()
    for step in tqdm(range(args.steps), desc="end to end", unit="step", file=sys.stderr):
        batch = [item(rng, KINDS[int(k)]) for k in rng.integers(0, len(KINDS), args.batch)]
        loss, describe_loss, aux_loss = loss_of(model, aux, pr, batch)
        loss_total = loss + args.describe * describe_loss + args.aux * aux_loss
        opt.zero_grad()
        loss_total.backward()
        torch.nn.utils.clip_grad_norm_([*model.parameters(), *aux.parameters()], 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        aux_losses.append(aux_loss.item())
        describe_losses.append(describe_loss.item())
        if step % 50 == 0 or step == args.steps - 1:
            note(f"step {step} loss {np.mean(losses[-50:]):.4f} describe {np.mean(describe_losses[-50:]):.4f} "
                 f"aux {np.mean(aux_losses[-50:]):.4f} "
                 f"lr {sched.get_last_lr()[0]:.2e} {time.perf_counter() - t0:.0f} s")
        if args.eval_every and step and step % args.eval_every == 0:
            acc = accuracy(model, pr, dataset(VAL_SEED, 50))
            note(f"step {step} held-out accuracy (50 questions): " + ", ".join(f"{k} {v:.2f}" for k, v in acc.items()))
    acc = accuracy(model, pr, dataset(VAL_SEED, args.val))
    note(f"held-out accuracy (seed {VAL_SEED}, {args.val} questions, float32 weights): "
         + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    note(f"trained in {time.perf_counter() - t0:.0f} s")
    trained = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    save_file(trained, work / "model.safetensors", metadata={"format": "pt"})
    plot(losses, work / "loss.png")
    if out.exists():
        shutil.rmtree(out)
    work.rename(out)
    print("\n".join(log[-3:]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
