"""What one chat() did and how long each stage took: one object, handed to every stage of the pipeline, each filling
its own fields (media: images and pieces; prompt: its length; KV state: reuse and prefill; generation: tokens and
times; text: the answer)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ChatStats:
    images: int = 0  # images and video frames in the prompt
    pieces: int = 0
    pieces_encoded: int = 0  # pieces that went through the vision encoder (the rest came from the cache)
    encode_ms: float = 0.0
    reused_tokens: int = 0  # prompt positions whose KV cache entries were kept from the previous call
    prompt_tokens: int = 0
    prefill_ms: float = 0.0
    tokens: list[int] = field(default_factory=list)  # generated ids (stop token excluded)
    decode_ms: float = 0.0
    ttft_ms: float = 0.0  # from the call to the first chosen token (images, prompt, prefill, first sample)
    token_times: list[float] = field(default_factory=list)  # perf_counter() when each token was chosen
    first_logits: np.ndarray | None = None  # the logits the first generated token was chosen from
    finish_reason: str | None = None  # "stop": a stop token or string; "length": max_new_tokens or the context's end
    text: str = ""  # the answer as the original chat() returns it (set when generation ends)

    def summary(self) -> str:
        pf = self.prompt_tokens / max(self.prefill_ms, 1e-9) * 1e3
        dc = len(self.tokens) / max(self.decode_ms, 1e-9) * 1e3
        return (f"{self.images} image(s), {self.pieces} pieces encoded in {self.encode_ms:.0f} ms "
                f"({self.pieces - self.pieces_encoded} cached); prefill {self.prompt_tokens} tokens "
                f"({self.reused_tokens} reused) in {self.prefill_ms:.0f} ms ({pf:.1f} tok/s); decode "
                f"{len(self.tokens)} tokens in {self.decode_ms:.0f} ms ({dc:.1f} tok/s); "
                f"finish: {self.finish_reason}")
