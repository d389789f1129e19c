"""One conversation on a loaded model: its llama.cpp context and KV state, who holds it, its open stream and the
statistics of its latest call. A server's slot is a session; MiniCPMV (chat.py) is the public face of one.

The pipeline hands one object forward: turns (messages.py) -> turns with their images encoded (media.py) ->
prompt positions (prompt.py) -> the answer's text pieces (generate.py: KV prefix reuse, prefill, token choice,
text as the original decodes it), each stage filling the call's one ChatStats.

Threads: calls are serialised. A chat() holds the session until it returns, a stream from its creation until it is
exhausted, closed or dropped; a chat() from another thread meanwhile waits, one from the thread that holds an open
stream raises BusyError (it would wait for itself). After close(), every call raises ClosedError.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from .chat_options import GenerationParams, PromptParams
from .errors import ClosedError
from .generate import answer
from .kv import KVState
from .llama_adapter import ContextParams, LlamaSession
from .media import Media
from .messages import Conversation, MessageError
from .model import Model
from .prompt import Prompt, build_prompt
from .stats import ChatStats
from .stream import ChatStream, Gate
from .text import AnswerText
from .video import Video


class Session:
    def __init__(self, model: Model, params: ContextParams, reuse_kv: bool = True) -> None:
        """`reuse_kv`: keep the KV cache of the common prefix of consecutive prompts (a multi-turn chat only
        prefills what changed)."""
        model.check_open()
        assert model.llm is not None
        self.model = model
        self.params = params
        self._gate = Gate()
        self._closed = True
        self.context = LlamaSession(model.llm, params)
        self.kv = KVState(self.context, reuse_kv, model.llm.file.embedding_scale)
        self.last = ChatStats()
        self._closed = False

    @property
    def n_ctx(self) -> int:
        return self.context.n_ctx

    @property
    def closed(self) -> bool:
        return self._closed or self.model.closed

    def perf(self) -> dict[str, float]:
        return self.context.perf()

    def chat(self, turns: Conversation, gp: GenerationParams, pp: PromptParams, stream: bool = False,
             progress: Callable[[int], None] | None = None, strip: bool = False) -> str | ChatStream:
        """Answer the conversation `turns` (messages.normalize). Returns the text (stripped, as the original), or
        with stream=True a ChatStream of text pieces (`strip`: without whitespace at either end, so that they join
        to the returned text)."""
        if stream and not gp.sampling and gp.num_beams > 1:
            raise ValueError("stream=True needs sampling=True or num_beams=1 (beam search cannot stream: the original "
                             "chat() streams sampled answers only)")
        if progress is not None and not callable(progress):
            raise TypeError("progress must be callable")
        self._gate.enter()
        try:
            if self.closed:
                raise ClosedError("this MiniCPMV is closed")
            pieces = self._answer(turns, gp, pp, progress, strip)
            stats = self.last
            if stream:
                return ChatStream(pieces, self._gate, stats)
            for _ in pieces:
                pass
            text = stats.text
        except BaseException:
            if self._gate.stream is None:
                self._gate.leave()
            raise
        self._gate.leave()
        return text

    def _answer(self, turns: Conversation, gp: GenerationParams, pp: PromptParams,
                progress: Callable[[int], None] | None, strip: bool) -> Iterator[str]:
        """Encode the images and build the prompt now (bad input fails here); prefill and generate lazily."""
        t_call = time.perf_counter()
        m, f = self.model, self.model.family
        stats = self.last = ChatStats()
        prompt = self._prompt(turns, pp, stats, progress)
        assert m.llm is not None
        text = AnswerText(m.llm.piece, f, m.llm.specials, m.llm.file.pieces, gp.skip_special_tokens, gp.stop, strip,
                          m.llm.file.add_space_prefix)
        return answer(self.kv, m.llm, prompt, gp, m.stop_ids, m.penalty_prefix, text, stats, t_call)

    def _prompt(self, turns: Conversation, pp: PromptParams, stats: ChatStats,
                progress: Callable[[int], None] | None = None) -> Prompt:
        """The conversation's prompt, its images encoded (through the cache); refused (ValueError) if it cannot fit
        the context."""
        m, f = self.model, self.model.family
        n_ctx = self.n_ctx
        if len(turns) > n_ctx:
            raise MessageError(f"{len(turns)} messages cannot fit in n_ctx {n_ctx} tokens")
        has_video = any(isinstance(p, Video) for t in turns for p in t.parts)
        if has_video and not f.video:
            raise MessageError(f"{f.display} has no video recipe (the original takes images only); pass the frames "
                               "you want as images")
        enc = m.encoder
        assert enc is not None and m.llm is not None
        file_ids = f.use_image_id if enc.use_image_id is None else enc.use_image_id
        default_ids = f.video.use_image_id if has_video and f.video else file_ids
        use_image_id = default_ids if pp.use_image_id is None else pp.use_image_id
        max_slices = pp.max_slice_nums or enc.max_slice_nums or f.max_slice_nums
        # no token stands for more characters than the vocabulary's longest: a lower bound of the text's tokens, so a
        # prompt that cannot fit is refused from it and the slicing plans, before any image is decoded
        least_text = -(-turns.text_chars // m.llm.file.max_token_chars)
        media: Media = m.media
        downsample = media.downsample_mode(pp.downsample_mode)
        encoded = media.encode_turns(turns, max_slices, stats, n_ctx, least_text, progress, downsample,
                                     pp.temporal_ids)
        prompt = build_prompt(m.template, encoded, f, m.llm, enc.query_num, use_image_id, pp.parse_special,
                              pp.template_kwargs)
        stats.prompt_tokens = len(prompt)
        if len(prompt) > n_ctx:
            raise ValueError(f"the prompt is {len(prompt)} tokens ({prompt.image_rows} of them image rows), more "
                             f"than n_ctx {n_ctx}")
        return prompt

    def prompt_ids(self, turns: Conversation, pp: PromptParams) -> list[int]:
        """The prompt's token ids as the original processor writes them: each image row as the placeholder token
        its original puts there (Family.row_token; a tagged video's VideoLayout.row_token). Nothing is decoded."""
        self._gate.enter()
        try:
            if self.closed:
                raise ClosedError("this MiniCPMV is closed")
            prompt = self._prompt(turns, pp, ChatStats())
        finally:
            self._gate.leave()
        llm = self.model.llm
        assert llm is not None
        rows = {t: llm.token_id(t) for t in set(prompt.row_tokens)}
        return [p if isinstance(p, int) else rows[prompt.row_tokens[p[0]]] for p in prompt.positions]

    def close(self) -> None:
        """Free the context now (an open stream of this thread is closed first; one of another thread is waited
        for). Idempotent."""
        if self._gate.holder == threading.get_ident():
            own = self._gate.stream  # a stream of another thread must stay droppable while we wait: no reference
            if own is not None:
                own.close()
            del own
        self._gate.enter()
        try:
            if not self._closed:
                self._closed = True
                self.context.close()
        finally:
            self._gate.leave()
