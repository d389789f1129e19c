// pack_op: the fused attention's keys and values as int16 in their per-head layout (int8_attention_pack.h), in
// 256-bit vectors (the one code for every kernel, so they all read the same integers).
#include "kernels/int8_attention_pack.h"

#ifdef MINICPMV_ATTN_X86

#include <immintrin.h>

#include <cstring>
#include <vector>

#include "kernels/simd_math.h"

#define AVX2_TARGET __attribute__((target("avx2,fma")))

namespace mcv::attn {
namespace {

// 8 floats as int16: rounded to nearest (even), 0 outside [-lim, lim] (NaN, inf: 0, never an undefined cast)
AVX2_TARGET inline __m128i round_i16x8(__m256 x, __m256 lim) {
    const __m256 r = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 ok = _mm256_and_ps(_mm256_cmp_ps(r, _mm256_sub_ps(_mm256_setzero_ps(), lim), _CMP_GE_OQ),
                                    _mm256_cmp_ps(r, lim, _CMP_LE_OQ));
    const __m256i i = _mm256_and_si256(_mm256_cvtps_epi32(r), _mm256_castps_si256(ok));
    return _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
}

// the lanes of n - d (< 8) channels: the loads and stores of a row's last, partial vector
AVX2_TARGET inline __m256i tail_mask(int64_t left) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(std::min<int64_t>(left, 8))),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// |x| with the NaN-ignoring max of the scalar loops (std::max(m, a): m where a is NaN)
AVX2_TARGET inline __m256 max_abs(__m256 m, __m256 x) {
    return _mm256_max_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), x), m);
}

// the floats d .. d + 7 of a run of nd (a multiple of 8): its last vector through the mask of its real channels
AVX2_TARGET inline __m256 load_run(const float * row, int64_t d, int64_t nd, __m256i last) {
    return d + 8 < nd ? _mm256_loadu_ps(row + d) : _mm256_maskload_ps(row + d, last);
}

}  // namespace

AVX2_TARGET float quantize_i16(const float * x, int64_t n, int32_t qmax, int16_t * q) {
    __m256 m = _mm256_setzero_ps();
    for (int64_t d = 0; d < n; d += 8) {
        m = max_abs(m, _mm256_and_ps(_mm256_loadu_ps(x + d), _mm256_castsi256_ps(tail_mask(n - d))));
    }
    const float amax = simd::hmax_256(m);
    const float s = amax / float(qmax), inv = s != 0.0f ? 1.0f / s : 0.0f;
    const __m256 vi = _mm256_set1_ps(inv), lim = _mm256_set1_ps(float(qmax));
    for (int64_t d = 0; d < n; d += 8) {
        const __m256 v = _mm256_and_ps(_mm256_loadu_ps(x + d), _mm256_castsi256_ps(tail_mask(n - d)));
        _mm_storeu_si128(reinterpret_cast<__m128i *>(q + d), round_i16x8(_mm256_mul_ps(v, vi), lim));
    }
    return s;
}

namespace {

// heads h0 .. h1 - 1 of batch entry b: their channels (h0 dh .. h1 dh) of every token, walked token by token
AVX2_TARGET void pack_heads(ggml_tensor * dst, int64_t b, int64_t h0, int64_t h1) {
    const ggml_tensor * k = dst->src[0];
    const ggml_tensor * v = dst->src[1];
    const ggml_tensor * q = dst->src[2];
    const int64_t dh = k->ne[0], n_head = k->ne[1], n_kv = k->ne[2], dim = dh * n_head, n_q = q->ne[2];
    const HeadLayout lay(dh, n_kv);
    const int64_t c0 = h0 * dh, nc = (h1 - h0) * dh, nd = round_up(nc, 8);
    // per channel of the run: the keys' sum (then mean), largest (then max |k - mean|) and smallest (then the
    // factor), the queries' largest |q| (then 1 / factor, then the values' 1 / scale), the values' scales; y: one
    // token's balanced keys (and the 8 floats quantize_i16 may read past the last head)
    std::vector<float> buf(size_t(nd) * 6 + 8, 0.0f);
    float *mean = buf.data(), *hi = mean + nd, *lo = hi + nd, *x = lo + nd, *scale = x + nd, *y = scale + nd;
    const float * kb = static_cast<const float *>(k->data) + b * n_kv * dim + c0;
    const float * vb = static_cast<const float *>(v->data) + b * n_kv * dim + c0;
    const float * qb = static_cast<const float *>(q->data) + (q->ne[3] == 1 ? 0 : b * n_q * dim) + c0;
    uint8_t * first = static_cast<uint8_t *>(dst->data) + size_t(b * n_head + h0) * lay.stride;
    std::memset(first, 0, size_t(h1 - h0) * lay.stride);
    const __m256i last = tail_mask(nc - (nd - 8));  // the run's last vector

    // keys less their mean over the keys (the same shift for every score of a query row), int16 per key. One
    // pass for the sums, the largest and the smallest per channel: max |k - mean| is the larger of max - mean and
    // mean - min (rounding keeps the order: the same float as taking it key by key)
    for (int64_t d = 0; d < nd; d += 8) {
        _mm256_storeu_ps(hi + d, _mm256_set1_ps(-INFINITY));
        _mm256_storeu_ps(lo + d, _mm256_set1_ps(INFINITY));
    }
    for (int64_t j = 0; j < n_kv; ++j) {
        for (int64_t d = 0; d < nd; d += 8) {
            const __m256 e = load_run(kb + j * dim, d, nd, last);
            _mm256_storeu_ps(mean + d, _mm256_add_ps(_mm256_loadu_ps(mean + d), e));
            _mm256_storeu_ps(hi + d, _mm256_max_ps(e, _mm256_loadu_ps(hi + d)));  // (NaN: skipped, as std::max)
            _mm256_storeu_ps(lo + d, _mm256_min_ps(e, _mm256_loadu_ps(lo + d)));
        }
    }
    for (int64_t i = 0; i < n_q; ++i) {
        for (int64_t d = 0; d < nd; d += 8)
            _mm256_storeu_ps(x + d, max_abs(_mm256_loadu_ps(x + d), load_run(qb + i * dim, d, nd, last)));
    }
    for (int64_t d = 0; d < nd; d += 8) {
        const __m256 m = _mm256_div_ps(_mm256_loadu_ps(mean + d), _mm256_set1_ps(float(n_kv)));
        _mm256_storeu_ps(mean + d, m);
        const __m256 span =
            _mm256_max_ps(_mm256_sub_ps(_mm256_loadu_ps(hi + d), m), _mm256_sub_ps(m, _mm256_loadu_ps(lo + d)));
        _mm256_storeu_ps(hi + d, _mm256_max_ps(span, _mm256_setzero_ps()));
    }
    for (int64_t d = 0; d < nc; ++d) {
        const float r = std::sqrt(hi[d] / x[d]);
        lo[d] = std::isfinite(r) && r > 0.0f ? r : 1.0f;  // (a channel of zeros, or inf / NaN: as it is)
        x[d] = 1.0f / lo[d];
    }
    for (int64_t hh = 0; hh < h1 - h0; ++hh) {
        std::memcpy(first + size_t(hh) * lay.stride + lay.smooth, lo + hh * dh, size_t(dh) * sizeof(float));
    }
    for (int64_t j = 0; j < n_kv; ++j) {
        for (int64_t d = 0; d < nd; d += 8) {
            const __m256 e = _mm256_sub_ps(load_run(kb + j * dim, d, nd, last), _mm256_loadu_ps(mean + d));
            _mm256_storeu_ps(y + d, _mm256_mul_ps(e, _mm256_loadu_ps(x + d)));
        }
        for (int64_t hh = 0; hh < h1 - h0; ++hh) {
            uint8_t * out = first + size_t(hh) * lay.stride;
            alignas(32) int16_t q16[kMaxHead + 8] = {};
            reinterpret_cast<float *>(out + lay.k_scales)[j] = quantize_i16(y + hh * dh, dh, lay.qmax, q16);
            for (int64_t g = 0; g < lay.pairs; ++g) std::memcpy(out + lay.key_byte(j, g), q16 + 2 * g, 4);
        }
    }

    // values: int16 per channel per block of keys
    const int64_t nv = lay.dv / 16, hd = round_up(dh, 8);
    const __m256 vlim = _mm256_set1_ps(kVmax);
    const __m256i head_last = tail_mask(dh - (hd - 8));  // a head's last vector
    alignas(64) int16_t tmp[kKeys][kMaxHead];
    for (int64_t blk = 0; blk < lay.blocks; ++blk) {
        const int64_t j0 = blk * kKeys, nk = std::min(kKeys, n_kv - j0);
        for (int64_t d = 0; d < nd; d += 8) _mm256_storeu_ps(scale + d, _mm256_setzero_ps());
        for (int64_t j = j0; j < j0 + nk; ++j) {
            for (int64_t d = 0; d < nd; d += 8) {
                _mm256_storeu_ps(scale + d, max_abs(_mm256_loadu_ps(scale + d), load_run(vb + j * dim, d, nd, last)));
            }
        }
        for (int64_t d = 0; d < nd; d += 8) {
            const __m256 sc = _mm256_div_ps(_mm256_loadu_ps(scale + d), vlim);
            _mm256_storeu_ps(scale + d, sc);
            const __m256 nz = _mm256_cmp_ps(sc, _mm256_setzero_ps(), _CMP_NEQ_UQ);
            _mm256_storeu_ps(x + d, _mm256_and_ps(nz, _mm256_div_ps(_mm256_set1_ps(1.0f), sc)));
        }
        for (int64_t hh = 0; hh < h1 - h0; ++hh) {
            for (int64_t j = 0; j < kKeys; ++j) {  // zeros past the block's keys and past the head's channels
                if (j >= nk) {
                    std::memset(tmp[j], 0, size_t(lay.dv) * sizeof(int16_t));
                } else if (hd < lay.dv) {
                    std::memset(tmp[j] + hd, 0, size_t(lay.dv - hd) * sizeof(int16_t));
                }
            }
            for (int64_t j = 0; j < nk; ++j) {
                for (int64_t d = 0; d < hd; d += 8) {
                    const __m256i m = d + 8 < hd ? _mm256_set1_epi32(-1) : head_last;
                    const __m256 e = _mm256_maskload_ps(vb + (j0 + j) * dim + hh * dh + d, m);
                    const __m256 xs = _mm256_maskload_ps(x + hh * dh + d, m);
                    _mm_store_si128(reinterpret_cast<__m128i *>(tmp[j] + d), round_i16x8(_mm256_mul_ps(e, xs), vlim));
                }
            }
            // per pair of keys, per 16 channels: 64 bytes of (channel lane x 2 int16 keys)
            uint8_t * out = first + size_t(hh) * lay.stride + lay.v_off + size_t(blk) * lay.v_block;
            for (int64_t jp = 0; jp < kKeys / 2; ++jp) {
                for (int64_t c = 0; c < nv; ++c) {
                    const __m256i a = _mm256_load_si256(reinterpret_cast<const __m256i *>(tmp[2 * jp] + c * 16));
                    const __m256i e = _mm256_load_si256(reinterpret_cast<const __m256i *>(tmp[2 * jp + 1] + c * 16));
                    const __m256i l = _mm256_unpacklo_epi16(a, e), w = _mm256_unpackhi_epi16(a, e);
                    auto * o = reinterpret_cast<__m256i *>(out + (jp * nv + c) * 64);
                    _mm256_storeu_si256(o, _mm256_permute2x128_si256(l, w, 0x20));
                    _mm256_storeu_si256(o + 1, _mm256_permute2x128_si256(l, w, 0x31));
                }
            }
            std::memcpy(out + kKeys * lay.dv * 2, scale + hh * dh, size_t(dh) * sizeof(float));
        }
    }
}

}  // namespace

// dst: every head's HeadLayout block; src: k, v [dh, H, n_kv, B] f32, q [dh, H, n_q, B or 1]. Each thread takes a
// run of whole heads, adjacent channels of every token, and walks the tokens in order: contiguous reads, and each
// channel's sums in the same order on any thread count. Channels are balanced before the keys are quantized
// (SmoothQuant's step): key channel d is divided and query channel d multiplied by f_d = sqrt(max |k_d| / max |q_d|),
// which leaves q . k as it is and gives a channel that is large in the keys only (as a few in trained towers are)
// the same range in both, so one scale per key and per query row no longer spends its bits on it.
void pack_op(ggml_tensor * dst, int ith, int nth, void * userdata) {
    (void)userdata;  // (one layout for every kernel)
    const int64_t n_head = dst->src[0]->ne[1], units = n_head * dst->src[0]->ne[3];
    for (int64_t u = units * ith / nth, u1 = units * (ith + 1) / nth; u < u1;) {
        const int64_t b = u / n_head, h0 = u % n_head, h1 = std::min(n_head, h0 + (u1 - u));
        pack_heads(dst, b, h0, h1);
        u += h1 - h0;
    }
}

}  // namespace mcv::attn

#endif  // MINICPMV_ATTN_X86
