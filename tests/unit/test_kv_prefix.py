"""Which part of a prompt the KV cache keeps from the previous one (kv.py), against a context that records what it
is asked to decode: the longest common prefix of tokens and image rows (an image row identified by its image's cache
key and row), the last position always decoded again for its logits, nothing kept after a failure, and for a model
with a recurrent state (which refuses to drop a tail) a prefix kept only when the new prompt extends all of it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from minicpmv_edge.kv import KVState
from minicpmv_edge.prompt import Prompt
from minicpmv_edge.stats import ChatStats


class Context:
    """A stand-in for LlamaSession: positions decoded, in order, as tokens or image rows."""

    n_ctx = 1000

    def __init__(self, recurrent: bool = False) -> None:
        self.held: list = []
        self.calls: list[tuple[str, int]] = []
        self.fail_at: int | None = None
        self.recurrent = recurrent  # as llama.cpp's recurrent memory: a partial removal is refused

    @property
    def n_past(self) -> int:
        return len(self.held)

    def clear(self) -> None:
        self.held = []
        self.calls.append(("clear", 0))

    def truncate(self, n: int) -> bool:
        self.calls.append(("truncate", n))
        if self.recurrent and n < len(self.held):
            return False
        self.held = self.held[:n]
        return True

    def decode_tokens(self, tokens: list[int], logits_last: bool = True) -> None:
        self._add(list(tokens), "tokens")

    def decode_embeddings(self, rows: np.ndarray, logits_last: bool = False) -> None:
        self._add([tuple(r) for r in rows], "rows")

    def _add(self, items: list, kind: str) -> None:
        if self.fail_at is not None and len(self.held) + len(items) > self.fail_at:
            raise MemoryError("full")
        self.held += items
        self.calls.append((kind, len(items)))


@dataclass
class Enc:
    key: str
    emb: np.ndarray


def _image(key: str, n: int, value: float) -> Enc:
    return Enc(key, np.full((n, 2), value, np.float32))


def _prompt(*parts) -> Prompt:
    positions, images = [], []
    for p in parts:
        if isinstance(p, Enc):
            positions += [(len(images), r) for r in range(len(p.emb))]
            images.append(p)
        else:
            positions += list(p)
    return Prompt(positions, images)


def test_only_what_follows_the_common_prefix_is_decoded() -> None:
    ctx = Context()
    kv = KVState(ctx, reuse=True)
    a = _image("a", 4, 1.0)
    stats = ChatStats()
    kv.prefill(_prompt([1, 2, 3], a, [4, 5]), stats)
    assert stats.reused_tokens == 0 and ctx.n_past == 9
    ctx.calls.clear()
    kv.prefill(_prompt([1, 2, 3], a, [4, 5], [6, 7]), stats)  # one more turn
    assert stats.reused_tokens == 9 and ctx.calls == [("truncate", 9), ("tokens", 2)]
    ctx.calls.clear()
    kv.prefill(_prompt([1, 2, 3], a, [4, 5]), stats)  # the same prompt again: its last position is decoded again
    assert stats.reused_tokens == 8 and ctx.calls == [("truncate", 8), ("tokens", 1)]


def test_image_rows_are_told_apart_by_their_image() -> None:
    ctx = Context()
    kv = KVState(ctx, reuse=True)
    stats = ChatStats()
    kv.prefill(_prompt([1], _image("a", 3, 1.0), [9]), stats)
    kv.prefill(_prompt([1], _image("b", 3, 1.0), [9]), stats)  # same values, another image: not reused
    assert stats.reused_tokens == 1 and ctx.held[1:4] == [(1.0, 1.0)] * 3


def test_reuse_off_and_a_failure_keep_nothing() -> None:
    ctx = Context()
    kv = KVState(ctx, reuse=False)
    stats = ChatStats()
    kv.prefill(_prompt([1, 2, 3]), stats)
    kv.prefill(_prompt([1, 2, 3, 4]), stats)
    assert stats.reused_tokens == 0 and ctx.calls[-2] == ("clear", 0)
    kv = KVState(ctx, reuse=True)
    kv.prefill(_prompt([1, 2, 3]), stats)
    ctx.fail_at = 4
    with pytest.raises(MemoryError):
        kv.prefill(_prompt([1, 2, 3], [4, 5, 6]), stats)
    ctx.fail_at = None
    kv.prefill(_prompt([1, 2, 3]), stats)  # after a failure the cache's state is unknown: nothing is kept
    assert stats.reused_tokens == 0


def test_image_rows_are_divided_by_the_embedding_scale() -> None:
    """llama.cpp multiplies every input row by MiniCPM's scale_emb; the original adds image features unscaled."""
    ctx = Context()
    KVState(ctx, reuse=True, embedding_scale=4.0).prefill(_prompt([1], _image("a", 2, 8.0), [2]), ChatStats())
    assert ctx.held[1:3] == [(2.0, 2.0), (2.0, 2.0)]


def test_a_recurrent_state_is_decoded_again_unless_the_prompt_extends_it() -> None:
    """A partial removal refused (a GatedDeltaNet state cannot be cut back): the whole prompt is decoded again; a
    prompt that extends everything decoded keeps it all."""
    ctx = Context(recurrent=True)
    kv = KVState(ctx, reuse=True)
    stats = ChatStats()
    a = _image("a", 3, 1.0)
    kv.prefill(_prompt([1, 2], a, [3, 4]), stats)
    ctx.calls.clear()
    kv.prefill(_prompt([1, 2], a, [3, 4], [5, 6]), stats)  # extends it: kept
    assert stats.reused_tokens == 7 and ctx.calls == [("truncate", 7), ("tokens", 2)]
    ctx.calls.clear()
    kv.prefill(_prompt([1, 2], a, [3, 9], [5, 6]), stats)  # differs at position 6: refused, all decoded again
    assert stats.reused_tokens == 0
    assert ctx.calls == [("truncate", 6), ("clear", 0), ("tokens", 2), ("rows", 3), ("tokens", 4)]
    assert ctx.held == [1, 2, (1.0, 1.0), (1.0, 1.0), (1.0, 1.0), 3, 9, 5, 6]
    ctx.calls.clear()
    kv.prefill(_prompt([1, 2], a, [3, 9], [5, 6]), stats)  # the same prompt: its last position is needed again
    assert stats.reused_tokens == 0 and ctx.calls[:2] == [("truncate", 8), ("clear", 0)]
