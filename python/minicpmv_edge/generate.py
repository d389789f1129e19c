"""The answer to a prompt: prefilled into the context (kv.py), its tokens chosen by sampling (llama.cpp's sampler
chain) or the original `chat(sampling=False)`'s beam search, both until a stop token, a stop string,
max_new_tokens or the end of the context, and decoded into text as it goes (text.py).

Beam search is transformers' (4.46) as the original runs it with `inputs_embeds`: per step, log-softmax of each
beam's logits, the repetition penalty on the log-probabilities of the tokens that beam generated, stop tokens
forbidden before min_new_tokens; cumulative float32 scores; the best 2K (K = beams, at least 1 + stop tokens) of all
beams' continuations in order, where a stop token within the first K ends a hypothesis (scored by sum / length,
the stop counted) and the others fill the K next beams; done when K hypotheses exist and none can still be beaten;
at the end the running beams become hypotheses too and the best scoring one is the answer. The beams run as
sequences of one llama.cpp context that share the prompt's KV cells.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from .chat_options import MAX_BEAMS, GenerationParams
from .kv import KVState
from .llama_adapter import N_SEQ, ContextFull, LlamaModel, Sampler
from .prompt import Prompt
from .stats import ChatStats
from .text import AnswerText


def answer(kv: KVState, model: LlamaModel, prompt: Prompt, p: GenerationParams, stop_ids: set[int],
           penalty_prefix: tuple[int, ...], text: AnswerText, stats: ChatStats, t_call: float) -> Iterator[str]:
    """Text pieces of the answer, lazily: the prompt is prefilled when the first piece is asked for. `stats` gets
    the prefill, the tokens and their times, the finish reason and the final text; `t_call`: when the call began
    (for the time to the first token)."""
    kv.prefill(prompt, stats)
    t1 = time.perf_counter()
    tokens: Iterator[int] | None = None
    try:
        if p.prefix:  # what the original puts before the decoded answer (4.5 thinking: the prompt's "<think>\n")
            yield p.prefix
        if p.sampling or p.num_beams == 1:  # one beam is transformers' greedy search: temperature 0
            tokens = sample(kv, model, p if p.sampling else replace(p, temperature=0.0), stop_ids, stats,
                            penalty_prefix)
        else:
            tokens = iter(beam_search(kv, p, stop_ids, stats, penalty_prefix))
        for i, tok in enumerate(tokens):
            if i == 0:
                stats.ttft_ms = (time.perf_counter() - t_call) * 1e3
            piece = text.push(tok)
            if piece:
                yield piece
            if text.stopped:
                break
        tail = text.flush()
        if tail:
            yield tail
        if text.stopped:
            stats.finish_reason = "stop"
        stats.text = p.prefix + text.final
    finally:
        if hasattr(tokens, "close"):
            tokens.close()  # type: ignore[union-attr]
        stats.decode_ms = (time.perf_counter() - t1) * 1e3


def sample(kv: KVState, model: LlamaModel, p: GenerationParams, stop_ids: set[int], out: ChatStats,
           penalty_prefix: tuple[int, ...] = ()) -> Iterator[int]:
    """Tokens one at a time; each is decoded into the context only when the next one is asked for.
    `penalty_prefix`: tokens the repetition penalty counts as already generated (Family.penalty_history)."""
    session = kv.session
    sampler = Sampler(model, p)
    for t in penalty_prefix:
        sampler.accept(t)
    try:
        for step in range(p.max_new_tokens):
            if step == 0:
                out.first_logits = session.logits()
            if step < p.min_new_tokens:  # the original's min_new_tokens: no stop before that many tokens
                session.suppress(stop_ids)
            tok = sampler.sample(session.ptr)
            out.token_times.append(time.perf_counter())
            # the original stops on its generation_config's eos ids only (Family.stop_tokens); llama.cpp's own
            # end-of-generation set can be larger (Qwen3.5's vocabulary adds <|fim_pad|>, <|repo_name|>, ...)
            if tok in stop_ids:
                out.finish_reason = "stop"
                return
            out.tokens.append(tok)
            if step + 1 == p.max_new_tokens or session.n_past >= session.n_ctx:
                out.finish_reason = "length"
            yield tok
            if out.finish_reason:
                return
            try:
                kv.append(tok)
            except ContextFull:
                out.finish_reason = "length"
                return
    finally:
        sampler.close()


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return x.astype(np.float32)


class _Hypotheses:
    """Finished beams, at most K, scored by their sum of log-probabilities over their length."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.items: list[tuple[float, list[int], bool]] = []  # (score, tokens, ended by a stop token)
        self.worst = 1e9

    def add(self, tokens: list[int], sum_logprobs: float, length: int, stopped: bool) -> None:
        score = sum_logprobs / float(length)
        if len(self.items) < self.k or score > self.worst:
            self.items.append((score, tokens, stopped))
            if len(self.items) > self.k:
                order = sorted((s, i) for i, (s, _, _) in enumerate(self.items))
                del self.items[order[0][1]]
                self.worst = order[1][0]
            else:
                self.worst = min(score, self.worst)

    def done(self, best_sum_logprobs: float, length: int) -> bool:
        return len(self.items) >= self.k and self.worst >= best_sum_logprobs / float(length)

    def best(self) -> tuple[list[int], bool]:
        _, tokens, stopped = sorted(self.items, key=lambda h: h[0])[-1]
        return tokens, stopped


def beam_search(kv: KVState, p: GenerationParams, stop_ids: set[int], out: ChatStats,
                penalty_prefix: tuple[int, ...] = ()) -> list[int]:
    """The best hypothesis (stop token excluded); sequence 0 keeps the prompt, the beams' cells are dropped.
    `penalty_prefix`: tokens every beam's repetition penalty counts as already generated."""
    session = kv.session
    k = p.num_beams
    assert 1 <= k <= MAX_BEAMS and 2 * MAX_BEAMS < N_SEQ
    eos = np.array(sorted(stop_ids), dtype=np.int64)
    n_prompt = session.n_past
    n_keep = max(2, 1 + len(eos)) * k
    sets = (list(range(1, k + 1)), list(range(MAX_BEAMS + 1, MAX_BEAMS + k + 1)))  # two sets of sequence ids
    cur = 0
    logits = np.repeat(session.logits()[None], k, axis=0)
    out.first_logits = logits[0].copy()
    scores = np.full(k, -1e9, dtype=np.float32)  # only the first beam is live at the start
    scores[0] = 0.0
    history: list[list[int]] = [[] for _ in range(k)]
    hyps = _Hypotheses(k)
    done = False
    for s in sets[cur]:
        session.seq_copy(0, s)
    try:
        for step in range(p.max_new_tokens):
            logp = _log_softmax(logits)
            if p.repetition_penalty != 1.0:
                for b in range(k):
                    if history[b] or penalty_prefix:
                        ids = np.unique([*penalty_prefix, *history[b]])
                        v = logp[b, ids]
                        logp[b, ids] = np.where(v < 0, v * np.float32(p.repetition_penalty),
                                                v / np.float32(p.repetition_penalty))
            if step < p.min_new_tokens:
                logp[:, eos] = -np.inf
            total = (logp + scores[:, None]).reshape(-1)
            top = np.argpartition(-total, n_keep)[:n_keep]
            top = top[np.lexsort((top, -total[top]))]  # by score, then by index
            vocab = logits.shape[1]
            nxt: list[tuple[np.float32, int, int]] = []
            for rank, idx in enumerate(top.tolist()):
                src, tok = divmod(idx, vocab)
                if tok in stop_ids:
                    if rank < k:
                        hyps.add(list(history[src]), float(total[idx]), step + 1, stopped=True)
                else:
                    nxt.append((total[idx], tok, src))
                if len(nxt) == k:
                    break
            done = hyps.done(float(total[top[0]]), step + 1)
            history = [[*history[src], tok] for _, tok, src in nxt]
            scores = np.array([sc for sc, _, _ in nxt], dtype=np.float32)
            out.token_times.append(time.perf_counter())
            if done or step + 1 == p.max_new_tokens or n_prompt + k * (step + 1) > session.n_ctx:
                break
            new = sets[1 - cur]
            for i, (_, _, src) in enumerate(nxt):
                session.seq_copy(sets[cur][src], new[i])
            for s in sets[cur]:
                session.seq_drop(s)
            cur = 1 - cur
            try:
                logits = session.decode_side_by_side([tok for _, tok, _ in nxt], new, n_prompt + step)
            except ContextFull:
                break
        if not done:
            for b in range(k):
                hyps.add(history[b], float(scores[b]), len(history[b]), stopped=False)
        tokens, stopped = hyps.best()
    finally:
        for s in (*sets[0], *sets[1]):
            session.seq_drop(s)
    out.tokens = tokens
    out.finish_reason = "stop" if stopped else "length"
    return tokens
