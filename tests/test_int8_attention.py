"""Our fused attention on the integer unit (cpp/kernels/int8_attention.cpp: int16 products on the AVX512-VNNI kernel,
or on 256-bit vectors with VPMADDWD (AVX2) or VPDPWSSD (where the products run on AVX-VNNI); softmax online over
blocks of 64 keys) against softmax attention in float64 numpy, at the real 2.6 tower's dimensions (1024 tokens, 16
heads of 72) and the resampler's (64 queries, 28 heads of 128), on data made hard for it: peaked rows (query scale
3), a key offset per channel (which the kernel subtracts), outlier channels in the keys and the values. Then the
shapes at its edges, the thread counts, the kernels against each other, and the encoder's choice of it against the
PyTorch towers."""

from __future__ import annotations

import numpy as np
import pytest
from test_encoder import VERSIONS, _pixels, assert_rows_match_reference, refs  # noqa: F401  (refs: the fixture)

from minicpmv_edge._native import _core
from minicpmv_edge.encoder import VisionEncoder

KERNELS = ["vnni", "avxvnni", "avx2"]
HERE = _core.int8_kernels()
ATTENTION = [k for k in HERE if k in KERNELS]  # the attention runs on the x86 kernels (not NEON)


def _kernel(name: str) -> str:
    if name not in HERE:
        pytest.skip(f"this CPU cannot run our {name} int8 kernel (it runs: {HERE or 'none'})")
    return name


def _data(seed: int, batch: int, q_batch: int, n_q: int, n_kv: int, heads: int, width: int, scale: float = 3.0
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((q_batch, n_q, heads, width)) * scale
    k = rng.standard_normal((batch, n_kv, heads, width)) + rng.standard_normal(width)  # a mean per channel
    k[..., width // 3] *= 8.0  # an outlier channel
    v = rng.standard_normal((batch, n_kv, heads, width))
    v[..., width // 2] *= 10.0
    return q.astype(np.float32), k.astype(np.float32), v.astype(np.float32)


def _reference(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """softmax(q k^T / sqrt(width)) v in float64: [B, n_q, heads, width]."""
    qb = np.broadcast_to(q, (k.shape[0], *q.shape[1:])).astype(np.float64)
    s = np.einsum("bqhd,bkhd->bhqk", qb, k.astype(np.float64)) / np.sqrt(q.shape[-1])
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", p, v.astype(np.float64))


def _cos_rows(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Cosine of every (batch entry, query, head) row of width values."""
    got = got.reshape(want.shape).astype(np.float64)
    return (got * want).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)


def _peakedness(q: np.ndarray, k: np.ndarray) -> float:
    """The mean over rows of the largest softmax weight (1/n_kv: uniform; 1: one key)."""
    qb = np.broadcast_to(q, (k.shape[0], *q.shape[1:])).astype(np.float64)
    s = np.einsum("bqhd,bkhd->bhqk", qb, k.astype(np.float64)) / np.sqrt(q.shape[-1])
    p = np.exp(s - s.max(-1, keepdims=True))
    return float((1.0 / p.sum(-1)).mean())


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("batch", "q_batch", "n_q", "n_kv", "heads", "width"),
                         [(1, 1, 1024, 1024, 16, 72), (2, 1, 64, 1024, 28, 128)], ids=["tower", "resampler"])
def test_real_dimensions_cosine_per_row(kernel: str, batch: int, q_batch: int, n_q: int, n_kv: int, heads: int,
                                        width: int) -> None:
    """Every row >= 0.9999 cosine against float64 (the f32 path: >= 0.999999), on attention peaked enough that 8-bit
    score products fall to ~0.94 (the data's largest weight per row averages well above uniform: checked)."""
    q, k, v = _data(0, batch, q_batch, n_q, n_kv, heads, width)
    assert _peakedness(q, k) > 50.0 / n_kv  # not near-uniform attention, where any rounding averages out
    want = _reference(q, k, v)
    f32, _ = _core.attention(q, k, v, "f32", 2)
    assert _cos_rows(f32, want).min() >= 0.999999
    got, _ = _core.attention(q, k, v, _kernel(kernel), 2)
    cos = _cos_rows(got, want)
    assert cos.min() >= 0.9999, (cos.min(), np.unravel_index(cos.argmin(), cos.shape))
    assert np.abs(got.reshape(want.shape) - want).max() <= 1e-2 * np.abs(want).max()


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("batch", "q_batch", "n_q", "n_kv", "heads", "width"),
                         [(2, 1, 33, 200, 2, 72),   # shared queries, a partial tile, a partial last block
                          (1, 1, 100, 77, 3, 40),   # heads of 40: a partial 16-wide value vector
                          (2, 2, 17, 65, 1, 7),     # an odd width (a padded channel pair), one key in a block
                          (1, 1, 5, 32, 4, 256),    # the fewest keys and the widest heads it takes
                          (1, 1, 300, 130, 2, 64)])
def test_edge_shapes(kernel: str, batch: int, q_batch: int, n_q: int, n_kv: int, heads: int, width: int) -> None:
    q, k, v = _data(1, batch, q_batch, n_q, n_kv, heads, width, scale=2.0)
    cos = _cos_rows(_core.attention(q, k, v, _kernel(kernel), 3)[0], _reference(q, k, v))
    assert cos.min() >= 0.9999, cos.min()


@pytest.mark.parametrize("kernel", KERNELS)
def test_extreme_rows(kernel: str) -> None:
    """A row whose scores are all equal (uniform weights), a row where one key dominates every other by far more
    than the 2^-100 below which a block gets no weight, a query of zeros, a key of zeros."""
    q, k, v = _data(2, 1, 1, 48, 200, 2, 72, scale=1.0)
    q[0, 0] = 0.0
    q[0, 1] = k[0, 150] * 40.0  # its score with key 150 is far above the rest
    k[0, 10] = 0.0
    cos = _cos_rows(_core.attention(q, k, v, _kernel(kernel), 2)[0], _reference(q, k, v))
    assert cos.min() >= 0.9999, cos.min()


@pytest.mark.parametrize("kernel", KERNELS)
def test_same_numbers_on_any_thread_count(kernel: str) -> None:
    q, k, v = _data(3, 2, 1, 150, 300, 5, 72)
    one = _core.attention(q, k, v, _kernel(kernel), 1)[0]
    for threads in (2, 3):
        np.testing.assert_array_equal(_core.attention(q, k, v, kernel, threads)[0], one)


@pytest.mark.parametrize("kernel", ["avxvnni", "avx2"])
def test_the_kernels_give_the_same_bits(kernel: str) -> None:
    """Same integers, same float steps: the 256-bit kernel (VPMADDWD + VPADDD, or VPDPWSSD for AVX-VNNI: here its
    AVX512-VL form) is the VNNI kernel's numbers."""
    _kernel("vnni"), _kernel(kernel)
    q, k, v = _data(4, 1, 1, 200, 333, 3, 72)
    np.testing.assert_array_equal(_core.attention(q, k, v, "vnni", 2)[0], _core.attention(q, k, v, kernel, 2)[0])


def test_shapes_it_does_not_take_are_refused() -> None:
    q, k, v = _data(5, 1, 1, 8, 31, 2, 16)
    kernel = ATTENTION[0] if ATTENTION else "vnni"
    with pytest.raises(ValueError, match="cannot run here"):  # under 32 keys: the f32 path's
        _core.attention(q, k, v, kernel, 1)
    with pytest.raises(ValueError, match="kind must be"):
        _core.attention(q, k, v, "int4", 1)
    with pytest.raises(ValueError, match="shapes do not match"):
        _core.attention(q[..., :8], k, v, "f32", 1)
    with pytest.raises(ValueError, match="n_threads must be 1 to 1024, not 1025"):  # (ggml aborts where a thread
        _core.attention(q, k, v, "f32", 1025)  # cannot start: the bound keeps that out of reach)


@pytest.mark.parametrize("version", VERSIONS)
def test_encoder_with_int8_attention_cosine_against_the_reference(converted, refs, version: str) -> None:  # noqa: F811
    """The f16 tower with attention="int8" (every self-attention of 32 keys or more on ours; the rest f32) against
    the PyTorch model on the f32 weights: cosine >= 0.9999 per output row, as the f32 attention gives."""
    kernel = _kernel(ATTENTION[0] if ATTENTION else "vnni")
    enc = VisionEncoder(converted(version, "f16").mmproj, n_threads=2, attention="int8")
    assert enc.native.attention_kernel == kernel and "our fused int8 attention" in enc.native.matmul_summary
    assert_rows_match_reference(enc, refs[version], version, 6, 0.9999)


@pytest.mark.arm64  # on NEON: "auto" keeps f32 and "int8" is refused (ours runs on the x86 kernels)
def test_encoder_chooses_it_for_quantized_files(converted) -> None:
    """"auto": ours for a file our int8 kernel runs (the tower's attention, 256 tokens or more; the profile shows
    the op), f32 for an f16 file; "f32" and "int8" force; other names are refused."""
    q8 = converted("2.6", "q8_0").mmproj
    auto = VisionEncoder(q8, n_threads=1, profile=True)
    assert auto.native.attention_kernel == (ATTENTION[0] if ATTENTION else "f32")
    auto.encode([_pixels(16, 20, 0), _pixels(10, 12, 1)])  # 320 tokens: ours; 120: f32
    ops = auto.native.profile
    assert any(name.startswith("CUSTOM:attn-pack") for name in ops) == bool(ATTENTION), sorted(ops)
    assert VisionEncoder(converted("2.6", "f16").mmproj, n_threads=1).native.attention_kernel == "f32"
    assert VisionEncoder(q8, n_threads=1, attention="f32").native.attention_kernel == "f32"
    with pytest.raises(ValueError, match="attention must be"):
        VisionEncoder(q8, n_threads=1, attention="int4")
    if not ATTENTION:  # (no int8 kernel of ours, or only NEON)
        with pytest.raises(ValueError, match="none of our int8 kernels"):
            VisionEncoder(q8, n_threads=1, attention="int8")
    with pytest.raises(ValueError, match="none of our int8 kernels"):
        VisionEncoder(q8, n_threads=1, int8="off", attention="int8")
