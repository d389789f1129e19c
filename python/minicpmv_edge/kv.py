"""What sequence 0 of the context holds, position by position, and how a new prompt reuses it: only what comes
after the longest common prefix of consecutive prompts (tokens, and image rows identified by their image's cache
key) is prefilled again, so a multi-turn chat pays only for its new turn.

A model with a recurrent state (llama_adapter: GatedDeltaNet layers) cannot drop the tail of what it decoded: there,
a prefix is reused only when the new prompt extends everything decoded so far, and otherwise (a chat template that
renders an earlier answer differently from how it was generated, say without its think block) the prompt is decoded
again from the start."""

from __future__ import annotations

import time

import numpy as np

from .llama_adapter import LlamaSession
from .prompt import Prompt
from .stats import ChatStats


class KVState:
    def __init__(self, session: LlamaSession, reuse: bool, embedding_scale: float = 1.0) -> None:
        """`embedding_scale`: what llama.cpp multiplies input rows by (MiniCPM's scale_emb); image rows are divided
        by it first, since the original adds image features unscaled."""
        self.session = session
        self.reuse = reuse
        self.embedding_scale = embedding_scale
        self.items: list[object] = []  # per position: a token id, or (image key, row)

    def forget(self) -> None:
        """The cache is in an unknown state (a decode failed midway): the next prompt starts afresh."""
        self.items = []

    def prefill(self, prompt: Prompt, stats: ChatStats) -> None:
        """Decode the prompt (its last position with logits); `stats` gets how many positions were kept and the
        time it took."""
        t0 = time.perf_counter()
        images = prompt.images
        items = [p if isinstance(p, int) else (images[p[0]].key, p[1]) for p in prompt.positions]
        keep = 0
        if self.reuse:
            old = self.items[: self.session.n_past]
            limit = min(len(old), len(items) - 1)  # the last position is decoded again, for its logits
            while keep < limit and old[keep] == items[keep]:
                keep += 1
        if not keep or not self.session.truncate(keep):  # refused: a recurrent state cannot be cut back
            keep = 0
            self.session.clear()
        self.items = items[:keep]
        pos, n = prompt.positions, len(prompt.positions)
        i = keep
        try:
            while i < n:
                j = i
                is_img = not isinstance(pos[i], int)
                while j < n and (not isinstance(pos[j], int)) == is_img:
                    j += 1
                last = j == n
                if is_img:
                    rows = np.stack([images[a].emb[r] for a, r in pos[i:j]])
                    if self.embedding_scale != 1.0:
                        rows /= np.float32(self.embedding_scale)
                    self.session.decode_embeddings(rows, logits_last=last)
                else:
                    self.session.decode_tokens(pos[i:j], logits_last=last)
                self.items += items[i:j]
                i = j
        except BaseException:
            self.forget()
            raise
        stats.reused_tokens = keep
        stats.prefill_ms = (time.perf_counter() - t0) * 1e3

    def append(self, token: int) -> None:
        """Decode one generated token after the conversation."""
        try:
            self.session.decode_tokens([token])
        except BaseException:
            self.forget()
            raise
        self.items.append(token)
