"""Our int8 matrix-product kernels (cpp/kernels/int8_gemm.cpp: AVX512-VNNI; int8_gemm_avx2.cpp: AVX-VNNI and AVX2
for x86 without AVX-512; int8_gemm_neon.cpp: SDOT and I8MM on aarch64):
block-quantized files through each agree with ggml's own int8 kernels and with the f32 PyTorch reference, for the
shapes that exercise their edges (rows of tokens not a multiple of the 4-row tile or the 128-row chunk, outputs not
a multiple of the 48-wide panel or the AVX2 kernel's 16-wide tile, inputs not whole 32-blocks), on any thread count;
the kernels give the same bits; each is chosen only where the CPU has it."""

from __future__ import annotations

import numpy as np
import pytest
from test_encoder import _pixels

from minicpmv_edge._native import _core
from minicpmv_edge.convert.quantize_mmproj import quantize_mmproj
from minicpmv_edge.encoder import VisionEncoder

KERNELS = ["vnni", "avxvnni", "avx2", "i8mm", "neon"]
HERE = _core.int8_kernels()


def _kernel(name: str) -> str:
    if name not in HERE:
        pytest.skip(f"this CPU cannot run our {name} int8 kernel (it runs: {HERE or 'none'})")
    return name


def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


PIECES = ([_pixels(7, 3, 1)], [_pixels(11, 13, 2)], [_pixels(9, 10, 3), _pixels(9, 10, 4)])


@pytest.mark.arm64(kernel=("neon", "i8mm"))  # the aarch64 run: our NEON kernels against ggml's DOTPROD / I8MM ones
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("qtype", ["q8_0", "q4_0"])
def test_kernel_agrees_with_ggml_int8(converted, tmp_path, qtype: str, kernel: str) -> None:
    """Same file, same per-block activation quantization: our kernel vs ggml's mul_mat on the file's blocks
    (q8_0 and q4_0 are taken exactly). Pieces of 7x3 = 21 tokens (a partial tile), 11x13 = 143 (past one chunk),
    and a batch of two; the tiny model's fc2 (rows of 200: not whole blocks, 64 outputs: a partial panel) runs
    quantized on ours and dequantized on ggml's path."""
    f16 = converted("2.6", "f16").mmproj
    path = quantize_mmproj(f16, tmp_path / f"mmproj-{qtype}.gguf", qtype)
    ours = VisionEncoder(path, n_threads=2, int8=_kernel(kernel))
    ggml = VisionEncoder(path, n_threads=2, int8="ggml")
    assert ours.native.int8_kernel == kernel and ggml.native.int8_kernel == "ggml"
    assert "the file's blocks" in ours.native.matmul_summary
    assert "quantized to q8_0 blocks at load" in ours.native.matmul_summary  # fc2, f16 in the file
    words = {"vnni": "AVX512-VNNI", "avxvnni": "AVX-VNNI", "avx2": "AVX2", "i8mm": "NEON I8MM",
             "neon": "NEON SDOT"}[kernel]
    assert words + " kernel" in ours.native.matmul_summary
    for pieces in PIECES:
        a, b = ours.encode(pieces), ggml.encode(pieces)
        assert _cos_rows(a, b).min() >= 0.9995, _cos_rows(a, b).min()


@pytest.mark.parametrize("kernel", ["avxvnni", "avx2"])
@pytest.mark.parametrize("qtype", ["q8_0", "q4_0"])
def test_the_256_bit_kernels_give_the_vnni_kernels_bits(converted, tmp_path, qtype: str, kernel: str) -> None:
    """The int32 block sums are exact on each and the float steps are the same operations in the same order.
    (On an AVX-512 machine the AVX-VNNI kernel runs its AVX512-VL encoding: the same code but one instruction's.)"""
    _kernel("vnni"), _kernel(kernel)
    path = quantize_mmproj(converted("2.6", "f16").mmproj, tmp_path / f"mmproj-{qtype}.gguf", qtype)
    vnni = VisionEncoder(path, n_threads=2, int8="vnni")
    other = VisionEncoder(path, n_threads=2, int8=kernel)
    for pieces in PIECES:
        np.testing.assert_array_equal(other.encode(pieces), vnni.encode(pieces))


@pytest.mark.arm64
@pytest.mark.parametrize("qtype", ["q8_0", "q4_0"])
def test_the_i8mm_kernel_gives_the_sdot_kernels_bits(converted, tmp_path, qtype: str) -> None:
    """SMMLA's 2 x 2 tiles hold the same exact int32 block sums as SDOT's lanes, and the float steps are the same."""
    _kernel("neon"), _kernel("i8mm")
    path = quantize_mmproj(converted("2.6", "f16").mmproj, tmp_path / f"mmproj-{qtype}.gguf", qtype)
    sdot = VisionEncoder(path, n_threads=2, int8="neon")
    i8mm = VisionEncoder(path, n_threads=2, int8="i8mm")
    assert i8mm.native.int8_kernel == "i8mm" and "NEON I8MM kernel" in i8mm.native.matmul_summary
    for pieces in PIECES:
        np.testing.assert_array_equal(i8mm.encode(pieces), sdot.encode(pieces))


@pytest.mark.arm64(kernel=("neon", "i8mm"))
@pytest.mark.parametrize("kernel", KERNELS)
def test_thread_count_does_not_change_the_result(converted, kernel: str) -> None:
    """Each output is computed by one thread with the same arithmetic, whatever the split."""
    path = converted("2.6", "q8_0").mmproj
    pieces = [_pixels(13, 17, 5)]
    enc = VisionEncoder(path, n_threads=1, int8=_kernel(kernel))
    assert enc.native.int8_kernel == kernel  # (which kernel ran)
    one = enc.encode(pieces)
    for n in (2, 3):
        np.testing.assert_array_equal(VisionEncoder(path, n_threads=n, int8=kernel).encode(pieces), one)


@pytest.mark.parametrize("version", ["2.6", "4.6"])
def test_q_k_v_share_one_quantization(converted, version: str) -> None:
    """Attention's q, k and v products read one input: on our kernel it is quantized once for the three (the op
    "quantize shared <input>"; 4.6's window merger too). (The numbers are those of three quantizations, which are
    one function of one input: the parity and same-bits tests above hold either way.)"""
    if not HERE:
        pytest.skip("this CPU runs none of our int8 kernels")
    enc = VisionEncoder(converted(version, "q8_0").mmproj, n_threads=1, profile=True)
    assert enc.native.int8_kernel == HERE[0]
    enc.encode([_pixels(8, 8, 0)])
    shared = sorted(k for k in enc.native.profile if k.startswith("CUSTOM:quantize shared "))
    assert shared == (["CUSTOM:quantize shared ln#-#"] if version == "2.6"
                      else ["CUSTOM:quantize shared ln#-#", "CUSTOM:quantize shared wm_ln#"]), shared


@pytest.mark.parametrize("version", ["2.6", "4.6"])
def test_layer_norms_are_computed_as_the_products_quantize(converted, version: str) -> None:
    """A LayerNorm whose output only feeds products on our kernel (each pre-LN block's two, 4.6's three merger
    norms) is computed as those products quantize their input: no norm, scale or shift nodes of its own (named
    after it, the shift last: "ADD:ln#-#"), while ggml's int8 path builds them. (Its numbers: the parity tests
    against PyTorch above.)"""
    if not HERE:
        pytest.skip("this CPU runs none of our int8 kernels")
    norms = ["ln#-#"] if version == "2.6" else ["ln#-#", "wm_ln#", "wm_ds_ln", "mg_ln"]
    seen = {}
    for int8 in (HERE[0], "ggml"):
        enc = VisionEncoder(converted(version, "q8_0").mmproj, n_threads=1, int8=int8, profile=True)
        enc.encode([_pixels(8, 8, 0)])
        seen[int8] = {n for n in norms if f"ADD:{n}" in enc.native.profile}
    assert seen == {HERE[0]: set(), "ggml": set(norms)}, seen


def test_only_block_quantized_files_are_repacked(converted) -> None:
    """An f16 file has no block-quantized matrix: nothing is repacked, f16 stays on OpenBLAS (as before)."""
    if not HERE:
        pytest.skip("this CPU runs none of our int8 kernels")
    enc = VisionEncoder(converted("2.6", "f16").mmproj, n_threads=1, int8="on")
    assert enc.native.int8_kernel == "off" and enc.native.packed_bytes == 0
    q8 = VisionEncoder(converted("2.6", "q8_0").mmproj, n_threads=1)
    assert q8.native.int8_kernel == HERE[0] and q8.native.packed_bytes > 0  # "auto": the fastest


def test_a_kernel_is_named_or_refused(converted) -> None:
    path = converted("2.6", "q8_0").mmproj
    names = "'auto', 'on', 'vnni', 'avxvnni', 'avx2', 'i8mm', 'neon', 'ggml' or 'off'"
    with pytest.raises(ValueError, match=f"int8 must be {names}, not 'avx'"):
        VisionEncoder(path, n_threads=1, int8="avx")
    for name in set(KERNELS) - set(HERE):  # where the CPU lacks one
        with pytest.raises(ValueError, match=f"int8='{name}': this CPU or build cannot run our {name} kernel"):
            VisionEncoder(path, n_threads=1, int8=name)
    with pytest.raises(ValueError, match="kernel must be 'vnni', 'avxvnni', 'avx2', 'i8mm' or 'neon'"):
        _core.int8_dot_peak_gops(1, "sve")
    for name in set(KERNELS) - set(HERE):
        assert _core.int8_dot_peak_gops(1, name) == 0.0
