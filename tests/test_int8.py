"""Our int8 matrix-product kernel (cpp/int8_gemm.cpp, AVX512-VNNI): block-quantized files through it agree with
ggml's own int8 kernels and with the f32 PyTorch reference, for the shapes that exercise its edges (rows of
tokens not a multiple of its 4-row tile or its 128-row chunk, outputs not a multiple of its 48-wide panel,
inputs not whole 32-blocks), on any thread count, and it is chosen only where the CPU has it."""

from __future__ import annotations

import numpy as np
import pytest
from test_encoder import _pixels

from minicpmv_edge._native import _core
from minicpmv_edge.convert.quantize_mmproj import quantize_mmproj
from minicpmv_edge.encoder import VisionEncoder

pytestmark = pytest.mark.skipif(not _core.int8_gemm_available(),
                                reason="the CPU has no AVX512-VNNI: our int8 kernel is not used here")


def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.mark.parametrize("qtype", ["q8_0", "q4_0"])
def test_kernel_agrees_with_ggml_int8(converted, tmp_path, qtype: str) -> None:
    """Same file, same per-block activation quantization: our kernel vs ggml's mul_mat on the file's blocks
    (q8_0 and q4_0 are taken exactly). Pieces of 7x3 = 21 tokens (a partial tile), 11x13 = 143 (past one chunk),
    and a batch of two; the tiny model's fc2 (rows of 200: not whole blocks, 64 outputs: a partial panel) runs
    quantized on ours and dequantized on ggml's path."""
    f16 = converted("2.6", "f16").mmproj
    path = quantize_mmproj(f16, tmp_path / f"mmproj-{qtype}.gguf", qtype)
    ours = VisionEncoder(path, n_threads=2, int8="on")
    ggml = VisionEncoder(path, n_threads=2, int8="ggml")
    assert ours.native.int8_kernel == "vnni" and ggml.native.int8_kernel == "ggml"
    assert "the file's blocks" in ours.native.matmul_summary
    assert "quantized to q8_0 blocks at load" in ours.native.matmul_summary  # fc2, f16 in the file
    for pieces in ([_pixels(7, 3, 1)], [_pixels(11, 13, 2)], [_pixels(9, 10, 3), _pixels(9, 10, 4)]):
        a, b = ours.encode(pieces), ggml.encode(pieces)
        assert _cos_rows(a, b).min() >= 0.9995, _cos_rows(a, b).min()


def test_thread_count_does_not_change_the_result(converted) -> None:
    """Each output is computed by one thread with the same arithmetic, whatever the split."""
    path = converted("2.6", "q8_0").mmproj
    pieces = [_pixels(13, 17, 5)]
    one = VisionEncoder(path, n_threads=1, int8="on").encode(pieces)
    for n in (2, 3):
        np.testing.assert_array_equal(VisionEncoder(path, n_threads=n, int8="on").encode(pieces), one)


def test_only_block_quantized_files_are_repacked(converted) -> None:
    """An f16 file has no block-quantized matrix: nothing is repacked, f16 stays on OpenBLAS (as before)."""
    enc = VisionEncoder(converted("2.6", "f16").mmproj, n_threads=1, int8="on")
    assert enc.native.int8_kernel == "off" and enc.native.packed_bytes == 0
    q8 = VisionEncoder(converted("2.6", "q8_0").mmproj, n_threads=1)
    assert q8.native.int8_kernel == "vnni" and q8.native.packed_bytes > 0
