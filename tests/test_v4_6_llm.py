"""MiniCPM-V 4.6's language-model side on llama.cpp (`qwen35`: IMROPE rope, GatedDeltaNet layers), on the tiny
checkpoint converted to f32: embedding batches carry 4 positions per row (image rows decode as tokens do); a
recurrent state is never cut back (a refused truncation is reported and the prompt decoded again); beams copy the
recurrent state correctly; a conversation whose template rewrites an earlier answer gets a fresh session's answer;
and the per-call options reach the prompt or are refused clearly."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from minicpmv_edge import EmbeddingCache, MiniCPMV
from minicpmv_edge.chat_options import chat_params
from minicpmv_edge.families import FAMILIES, llm_architectures
from minicpmv_edge.generate import answer
from minicpmv_edge.kv import KVState
from minicpmv_edge.llama_adapter import ContextParams, LlamaModel, LlamaSession
from minicpmv_edge.llm_file import check_llm_file
from minicpmv_edge.messages import normalize
from minicpmv_edge.prompt import Prompt, build_prompt
from minicpmv_edge.stats import ChatStats
from minicpmv_edge.text import AnswerText

TEXT = ("<|im_start|>user\nWhat is the shape of the red circle in this picture, and how many are there?"
        "<|im_end|>\n<|im_start|>assistant\n")
N_BATCH = 17  # the smallest batch a context takes (one output per sequence): prompts here span several


@pytest.fixture(scope="module")
def llms(converted) -> dict[str, LlamaModel]:
    out = {v: LlamaModel(check_llm_file(converted(v, "f32").model, llm_architectures())) for v in ("4.6", "2.6")}
    yield out
    for m in out.values():
        m.close()


def _session(m: LlamaModel) -> LlamaSession:
    return LlamaSession(m, ContextParams(n_ctx=512, n_batch=N_BATCH, n_threads=2, kv_type="f32"))


def _token_rows(m: LlamaModel, tokens: list[int]) -> np.ndarray:
    """The rows of token_embd for `tokens` (what llama.cpp's embedding layer gives them)."""
    t = next(t for t in gguf.GGUFReader(m.path).tensors if t.name == "token_embd.weight")
    return np.asarray(t.data, np.float32).reshape(-1, m.n_embd)[tokens]


def test_the_rope_type_decides_the_positions_per_row(llms) -> None:
    """qwen35 is IMROPE (llama_model_rope_type 40): 4 positions per embedding row; qwen2 is NEOX: one."""
    assert (llms["4.6"].rope_type, llms["4.6"].pos_per_embd, llms["4.6"].recurrent) == (40, 4, True)
    assert (llms["2.6"].pos_per_embd, llms["2.6"].recurrent) == (1, False)


@pytest.mark.parametrize("version", ["4.6", "2.6"])
def test_token_rows_decode_as_their_tokens(llms, version: str) -> None:
    """A prompt decoded as embedding rows (rows of token_embd, in batches split over n_batch) gives the logits of
    its tokens, alone and between token runs: the positions every section of an M-RoPE row gets are right."""
    m = llms[version]
    toks = m.tokenize(TEXT)
    assert len(toks) > 2 * N_BATCH
    s = _session(m)
    try:
        s.decode_tokens(toks)
        want = s.logits()
        s.clear()
        s.decode_embeddings(_token_rows(m, toks), logits_last=True)
        np.testing.assert_allclose(s.logits(), want, rtol=0, atol=1e-4)
        s.clear()
        s.decode_tokens(toks[:5], logits_last=False)  # as a prompt with an image: text, rows, text
        s.decode_embeddings(_token_rows(m, toks[5:30]))
        s.decode_tokens(toks[30:])
        np.testing.assert_allclose(s.logits(), want, rtol=0, atol=1e-4)
        assert s.n_past == len(toks)
    finally:
        s.close()


def test_a_recurrent_state_is_never_cut_back(llms) -> None:
    """llama.cpp refuses to drop a tail of a GatedDeltaNet state (any tail, the last position included):
    truncate() says so and leaves the state as it was; a normal KV cache drops it."""
    m = llms["4.6"]
    toks = m.tokenize(TEXT)
    s, fresh = _session(m), _session(m)
    try:
        s.decode_tokens(toks)
        n = s.n_past
        assert s.truncate(n) and s.n_past == n  # keeping everything is always possible
        for keep in (10, n - 1):
            assert not s.truncate(keep) and s.n_past == n
        s.decode_tokens(toks[:1])
        fresh.decode_tokens(toks)
        fresh.decode_tokens(toks[:1])
        np.testing.assert_array_equal(s.logits(), fresh.logits())  # the refused calls changed nothing
    finally:
        s.close()
        fresh.close()
    other = _session(llms["2.6"])
    try:
        other.decode_tokens(llms["2.6"].tokenize(TEXT))
        assert other.truncate(10) and other.n_past == 10
    finally:
        other.close()


def test_a_changed_prefix_is_decoded_again(llms) -> None:
    """KVState on a recurrent model: a prompt that shares only part of what was decoded is decoded from the start
    (the same logits as a fresh context); one that extends it keeps all of it."""
    m = llms["4.6"]
    toks = m.tokenize(TEXT)
    other = toks[:20] + m.tokenize(" Which colour is the square?<|im_end|>\n<|im_start|>assistant\n")
    longer = other + m.tokenize("It is red.<|im_end|>\n<|im_start|>user\nAnd the circle?<|im_end|>\n")
    s, fresh = _session(m), _session(m)
    try:
        kv, stats = KVState(s, reuse=True), ChatStats()
        kv.prefill(Prompt(toks), stats)
        kv.prefill(Prompt(other), stats)
        assert stats.reused_tokens == 0 and s.n_past == len(other)
        KVState(fresh, reuse=True).prefill(Prompt(other), ChatStats())
        np.testing.assert_array_equal(s.logits(), fresh.logits())
        kv.prefill(Prompt(longer), stats)
        assert stats.reused_tokens == len(other)
        fresh.clear()
        KVState(fresh, reuse=True).prefill(Prompt(longer), ChatStats())
        np.testing.assert_allclose(s.logits(), fresh.logits(), rtol=0, atol=2e-2)  # other batch splits only
    finally:
        s.close()
        fresh.close()


def test_beams_copy_the_recurrent_state(llms) -> None:
    """Beam search's sequences on a hybrid memory: copies of the prompt's sequence, then copies of copies, each
    decoded side by side, give the logits of the same tokens decoded one after another in a fresh context, and the
    prompt's sequence stays as it was."""
    m = llms["4.6"]
    toks = m.tokenize(TEXT)
    a, b, c, d, e = m.tokenize(" red blue green yellow black")[:5]

    def alone(*extra: int) -> np.ndarray:
        s = _session(m)
        try:
            s.decode_tokens(toks)
            for t in extra:
                s.decode_tokens([t])
            return s.logits()
        finally:
            s.close()

    s = _session(m)
    try:
        s.decode_tokens(toks)
        n = s.n_past
        s.seq_copy(0, 1)
        s.seq_copy(0, 2)
        first = s.decode_side_by_side([a, b], [1, 2], n)
        s.seq_copy(1, 9)
        s.seq_copy(1, 10)
        s.seq_drop(1)
        s.seq_drop(2)
        second = s.decode_side_by_side([c, d], [9, 10], n + 1)
        for got, want in ((first[0], alone(a)), (first[1], alone(b)), (second[0], alone(a, c)),
                          (second[1], alone(a, d))):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)
        s.seq_drop(9)
        s.seq_drop(10)
        s.decode_tokens([e])
        np.testing.assert_allclose(s.logits(), alone(e), rtol=0, atol=1e-3)
    finally:
        s.close()


def _greedy(kv: KVState, m: LlamaModel, msgs: list[dict], n: int = 10) -> tuple[str, ChatStats]:
    """One greedy answer to `msgs` on the 4.6 template, as the session builds it (no image, no encoder)."""
    f = FAMILIES["4.6"]
    gp, _ = chat_params(f.chat, sampling=False, max_new_tokens=n, seed=1)
    prompt = build_prompt(m.file.chat_template or f.chat_template, normalize(msgs), f, m, 0, False)
    stats = ChatStats()
    text = AnswerText(m.piece, f, m.specials, m.file.pieces, gp.skip_special_tokens)
    stop = {m.token_id(t) for t in f.stop_tokens}
    for _ in answer(kv, m, prompt, gp, stop, (), text, stats, 0.0):
        pass
    return stats.text, stats


def test_a_rewritten_history_gives_a_fresh_sessions_answer(llms) -> None:
    """The 4.6 template renders an earlier answer without the generation prompt's think block, so turn 2's prompt
    is not what was decoded: the context is decoded again and the answer is a fresh context's."""
    m = llms["4.6"]
    s, fresh = _session(m), _session(m)
    try:
        kv = KVState(s, reuse=True)
        q1 = [{"role": "user", "content": "Hello, what is this?"}]
        a1, st1 = _greedy(kv, m, q1)
        decoded = list(kv.items)
        q2 = [*q1, {"role": "assistant", "content": a1}, {"role": "user", "content": "And the colour?"}]
        a2, st2 = _greedy(kv, m, q2)
        f = FAMILIES["4.6"]
        turn2 = build_prompt(m.file.chat_template or f.chat_template, normalize(q2), f, m, 0, False).positions
        assert turn2[: len(decoded)] != decoded  # the history was rewritten, not extended
        assert st1.tokens and st2.reused_tokens == 0
        b2, _ = _greedy(KVState(fresh, reuse=True), m, q2)
        assert a2 == b2
    finally:
        s.close()
        fresh.close()


def test_answers_skip_special_tokens_and_keep_think(llms) -> None:
    """4.6's answer is post_process_image_text_to_text's: special tokens skipped, the plain `<think>` / `</think>`
    kept, and `<|fim_pad|>` too, which llama.cpp makes a control token (and an end-of-generation one) although the
    original tokenizer keeps it; stripped."""
    m = llms["4.6"]
    f = FAMILIES["4.6"]
    fim = m.token_id("<|fim_pad|>")
    ids = [m.token_id("<think>"), *m.tokenize("\nhm "), m.token_id("<|im_start|>"), m.token_id("</think>"),
           *m.tokenize(" red "), fim, m.token_id("<image>")]
    skip = chat_params(f.chat, seed=1)[0].skip_special_tokens
    text = AnswerText(m.piece, f, m.specials, m.file.pieces, skip)
    for t in ids:
        text.push(t)
    text.flush()
    assert skip and text.final == "<think>\nhm </think> red <|fim_pad|>"
    assert m.is_eog(fim) and fim not in {m.token_id(t) for t in f.stop_tokens}  # generation does not stop on it


# ---- the whole chat() (needs the 4.6 encoder: its mmproj loads for every call) ----

@pytest.fixture(scope="module")
def chat46(converted):
    res = converted("4.6", "f32")
    with MiniCPMV(res.model, res.mmproj, n_ctx=1024, n_threads=2, kv_type="f32", flash_attn=False,
                  cache=EmbeddingCache(max_bytes=0)) as m:
        yield m


def test_chat_defaults_come_from_the_gguf(chat46) -> None:
    """The converter carried generation_config.json: sampling at 0.7, top_p 1.0, top_k off, no penalty."""
    d = chat46.model.chat_defaults
    assert d.sampling and dict(d.sample) == pytest.approx({"temperature": 0.7, "top_p": 1.0, "top_k": 0,
                                                           "repetition_penalty": 1.0})
    assert dict(d.beam) == {"num_beams": 1, "repetition_penalty": 1.0} and d.skip_special_tokens


def test_multi_turn_chat_equals_a_fresh_session(chat46) -> None:
    q1 = [{"role": "user", "content": "Hello, what is this?"}]
    a1 = chat46.chat(q1, sampling=False, max_new_tokens=8)
    q2 = [*q1, {"role": "assistant", "content": a1}, {"role": "user", "content": "And the colour?"}]
    a2 = chat46.chat(q2, sampling=False, max_new_tokens=8)
    assert chat46.last.reused_tokens == 0
    other = chat46.slot()
    try:
        assert other.chat(q2, sampling=False, max_new_tokens=8) == a2
        streamed = "".join(other.chat(q2, stream=True, sampling=False, max_new_tokens=8))  # greedy may stream
        assert streamed.strip() == a2  # a stream is the raw text; the answer is stripped
    finally:
        other.close()


def test_thinking_switch_reaches_the_template(chat46) -> None:
    """enable_thinking=True ends the prompt with `<think>\\n`; False and not given with the empty think block."""
    ask = [{"role": "user", "content": "Hi"}]
    lengths = {}
    for value in (None, False, True):
        chat46.chat(ask, sampling=False, max_new_tokens=1, enable_thinking=value)
        lengths[value] = chat46.last.prompt_tokens
    tok = chat46.model.llm.tokenize
    assert lengths[None] == lengths[False] == lengths[True] - len(tok("\n")) + len(tok("\n\n</think>\n\n"))


def test_downsample_mode_sets_the_image_rows(chat46) -> None:
    """4x gives a piece 4 times the rows of 16x, on pieces sliced to multiples of 28 instead of 56."""
    img = (np.arange(300 * 200 * 3, dtype=np.uint32).reshape(200, 300, 3) % 251).astype(np.uint8)
    ask = [{"role": "user", "content": [img, "What is it?"]}]
    rows = {}
    for mode in ("16x", "4x"):
        chat46.chat(ask, sampling=False, max_new_tokens=1, downsample_mode=mode)
        rows[mode] = chat46.last.prompt_tokens
    chat46.chat(ask, sampling=False, max_new_tokens=1)
    assert chat46.last.prompt_tokens == rows["16x"]  # the mmproj's default
    assert rows["4x"] - rows["16x"] == 260 - 70  # 300x200: 560x364 -> 260 rows in 4x, 560x392 -> 70 in 16x


def test_options_are_refused_clearly(chat46, converted) -> None:
    with pytest.raises(ValueError, match="downsample_mode must be one of '16x', '4x'"):
        chat46.chat([{"role": "user", "content": "Hi"}], downsample_mode="2x")
    with pytest.raises(TypeError, match="enable_thinking must be True or False"):
        chat46.chat([{"role": "user", "content": "Hi"}], enable_thinking="no")
    with pytest.raises(ValueError, match="stream=True needs sampling=True or num_beams=1"):
        chat46.chat([{"role": "user", "content": "Hi"}], stream=True, sampling=False, num_beams=2)
    res = converted("2.6", "f32")
    with MiniCPMV(res.model, res.mmproj, n_threads=2) as m, \
            pytest.raises(ValueError, match=r"MiniCPM-V 2\.6.s encoder gives every image piece a fixed 64 tokens"):
        m.chat([{"role": "user", "content": "Hi"}], downsample_mode="4x")


def test_a_video_is_one_id_and_its_frames(chat46, tmp_path) -> None:
    """A 3-second clip: 4.6's recipe takes a frame a second; the prompt holds one `<image_id>0</image_id>`, then the
    three frames' `<image>`..`</image>` back to back, and the chat answers."""
    from fractions import Fraction

    import av

    from minicpmv_edge.video import Video

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=Fraction(4))
        stream.width, stream.height, stream.pix_fmt = 112, 112, "yuv420p"
        for i in range(12):
            img = np.full((112, 112, 3), (20 * i) % 256, np.uint8)
            for pkt in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    msgs = [{"role": "user", "content": [Video(path), "What happens?"]}]
    w = chat46.model
    turns = w.media.encode_turns(normalize(msgs), 9, ChatStats(), downsample="16x")
    prompt = build_prompt(w.template, turns, w.family, w.llm, 0, True)
    ids = [p for p in prompt.positions if isinstance(p, int)]
    sp = w.llm.specials
    assert ids.count(sp["<image_id>"]) == 1 and ids.count(sp["<image>"]) == 3 and len(prompt.images) == 3
    ends = [i for i, p in enumerate(prompt.positions) if p == sp["</image>"]]
    starts = [i for i, p in enumerate(prompt.positions) if p == sp["<image>"]]
    assert [s - e for e, s in zip(ends, starts[1:], strict=False)] == [1, 1]  # nothing between the frames
    assert isinstance(chat46.chat(msgs, sampling=False, max_new_tokens=2), str) and chat46.last.images == 3
    ids = chat46.prompt_ids(msgs)  # the processor's input_ids: a video's rows are <|video_pad|>
    assert ids.count(sp["<|video_pad|>"]) == prompt.image_rows and sp["<|image_pad|>"] not in ids


def test_prompt_ids_hold_the_processors_placeholders(chat46) -> None:
    """prompt_ids() is what transformers' processor gives as input_ids: 300x200 is one piece of 70 `<|image_pad|>`
    rows in 16x (260 in 4x), after `<image_id>0</image_id><image>`, as the fact sheet's example."""
    img = np.full((200, 300, 3), 90, np.uint8)
    ask = [{"role": "user", "content": [img, "What is it?"]}]
    sp = chat46.model.llm.specials
    for mode, rows in ((None, 70), ("16x", 70), ("4x", 260)):
        ids = chat46.prompt_ids(ask, downsample_mode=mode)
        at = ids.index(sp["<image>"])
        assert ids[at - 3] == sp["<image_id>"] and ids[at - 1] == sp["</image_id>"]
        assert ids[at + 1 : at + 2 + rows] == [sp["<|image_pad|>"]] * rows + [sp["</image>"]], mode
        assert ids.count(sp["<|image_pad|>"]) == rows
    thinking = chat46.prompt_ids(ask, enable_thinking=True)
    assert thinking[-2:] == [sp["<think>"], *chat46.model.llm.tokenize("\n")]
