"""llama.cpp's own MiniCPM-V implementation (libmtmd, through llama-cpp-python's ctypes bindings)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import llama_cpp
import numpy as np
from llama_cpp import mtmd_cpp as M


@llama_cpp.llama_log_callback
def _quiet(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """libmtmd logs every tensor at load; tests keep stderr for failures."""


M.mtmd_log_set(_quiet, None)
M.mtmd_helper_log_set(_quiet, None)


class Mtmd:
    """A text model plus an mmproj loaded in libmtmd; `encode` returns the embeddings of each image chunk."""

    def __init__(self, model: Path, mmproj: Path, n_threads: int = 2) -> None:
        self.llm = llama_cpp.Llama(str(model), n_ctx=2048, n_threads=n_threads, verbose=False)
        params = M.mtmd_context_params_default()
        params.use_gpu = False
        params.n_threads = n_threads
        params.print_timings = False
        params.warmup = False
        self.ctx = M.mtmd_init_from_file(str(mmproj).encode(), self.llm.model, params)
        if not self.ctx:
            raise RuntimeError(f"libmtmd could not load {mmproj}")
        self.n_embd = llama_cpp.llama_model_n_embd(self.llm.model)

    def encode(self, rgb: np.ndarray) -> list[np.ndarray]:
        """rgb: [H, W, 3] uint8 -> one [n_tokens, n_embd] array per image chunk (overview first)."""
        h, w, _ = rgb.shape
        data = np.ascontiguousarray(rgb, dtype=np.uint8)
        bitmap = M.mtmd_bitmap_init(w, h, data.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
        chunks = M.mtmd_input_chunks_init()
        try:
            text = M.mtmd_input_text()
            text.text = M.mtmd_default_marker()
            text.text_len = len(text.text) if hasattr(text, "text_len") else 0
            text.add_special = False
            text.parse_special = True
            bitmaps = (M.mtmd_bitmap_p_ctypes * 1)(bitmap)
            rc = M.mtmd_tokenize(self.ctx, chunks, ctypes.byref(text), bitmaps, 1)
            if rc != 0:
                raise RuntimeError(f"mtmd_tokenize failed ({rc})")
            out = []
            for i in range(M.mtmd_input_chunks_size(chunks)):
                chunk = M.mtmd_input_chunks_get(chunks, i)
                if M.mtmd_input_chunk_get_type(chunk) != M.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                    continue
                if M.mtmd_encode_chunk(self.ctx, chunk) != 0:
                    raise RuntimeError("mtmd_encode_chunk failed")
                n = M.mtmd_input_chunk_get_n_tokens(chunk)
                ptr = M.mtmd_get_output_embd(self.ctx)
                out.append(np.ctypeslib.as_array(ptr, shape=(n * self.n_embd,)).reshape(n, self.n_embd).copy())
            return out
        finally:
            M.mtmd_input_chunks_free(chunks)
            M.mtmd_bitmap_free(bitmap)

    def close(self) -> None:
        if self.ctx:
            M.mtmd_free(self.ctx)
            self.ctx = None
        self.llm.close()
