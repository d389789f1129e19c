"""MiniCPM-Llama3-V 2.5's padded vision batch (the original `modeling_minicpmv.py` `get_vllm_embedding`, with the
released config's `batch_vision_input: true`): all pieces of all images of a call form one batch zero-padded to the
longest piece, and since the original's patch mask has the wrong shape (it is all true) every piece attends to its
padding and its 1-D positions span the padded length L. A piece's embedding therefore depends on the longest piece
of the prompt: the encoder runs each piece as a member of a batch of L patches (`pad_to`), and the embedding cache
keys an image by its pixels and L."""

from __future__ import annotations

from collections.abc import Sequence


class LongestPiece:
    def pad_length(self, piece_patches: Sequence[int]) -> int:
        return max(piece_patches, default=0)
