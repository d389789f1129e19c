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

// A thread's run: heads h0 .. h1 - 1 of batch entry b, their channels (h0 dh .. h1 dh) of every token, walked
// token by token; nc channels, read 8 at a time (nd), the last vector through `last`
struct Run {
    int64_t dh, heads, n_kv, n_q, dim, nc, nd;
    HeadLayout lay;
    const float *k, *v, *q;  // the run's first channel of token 0
    uint8_t * out;           // the run's first head's block
    __m256i last;
    AVX2_TARGET Run(const ggml_tensor * dst, int64_t b, int64_t h0, int64_t h1)
        : dh(dst->src[0]->ne[0]), heads(h1 - h0), n_kv(dst->src[0]->ne[2]), n_q(dst->src[2]->ne[2]),
          dim(dh * dst->src[0]->ne[1]), nc(heads * dh), nd(round_up(nc, 8)), lay(dh, n_kv) {
        const int64_t c0 = h0 * dh;
        k = static_cast<const float *>(dst->src[0]->data) + b * n_kv * dim + c0;
        v = static_cast<const float *>(dst->src[1]->data) + b * n_kv * dim + c0;
        q = static_cast<const float *>(dst->src[2]->data) + (dst->src[2]->ne[3] == 1 ? 0 : b * n_q * dim) + c0;
        out = static_cast<uint8_t *>(dst->data) + size_t(b * dst->src[0]->ne[1] + h0) * lay.stride;
        last = tail_mask(nc - (nd - 8));
    }
    uint8_t * head(int64_t hh) const { return out + size_t(hh) * lay.stride; }
};

// keys less their mean over the keys (the same shift for every score of a query row), their channels balanced
// against the queries' (pack_op), int16 per key. One pass for the sums, the largest and the smallest per channel:
// max |k - mean| is the larger of max - mean and mean - min (rounding keeps the order: the same float as taking it
// key by key). buf: 5 nd + 8 floats
AVX2_TARGET void pack_keys(const Run & r, float * buf) {
    // per channel: the sum (then the mean), the largest (then max |k - mean|), the smallest (then the factor), the
    // queries' largest |q| (then 1 / the factor); y: one token's balanced keys (and 8 floats for quantize_i16)
    float *mean = buf, *hi = mean + r.nd, *lo = hi + r.nd, *x = lo + r.nd, *y = x + r.nd;
    for (int64_t d = 0; d < r.nd; d += 8) {
        _mm256_storeu_ps(mean + d, _mm256_setzero_ps());
        _mm256_storeu_ps(hi + d, _mm256_set1_ps(-INFINITY));
        _mm256_storeu_ps(lo + d, _mm256_set1_ps(INFINITY));
        _mm256_storeu_ps(x + d, _mm256_setzero_ps());
    }
    for (int64_t j = 0; j < r.n_kv; ++j) {
        for (int64_t d = 0; d < r.nd; d += 8) {
            const __m256 e = load_run(r.k + j * r.dim, d, r.nd, r.last);
            _mm256_storeu_ps(mean + d, _mm256_add_ps(_mm256_loadu_ps(mean + d), e));
            _mm256_storeu_ps(hi + d, _mm256_max_ps(e, _mm256_loadu_ps(hi + d)));  // (NaN: skipped, as std::max)
            _mm256_storeu_ps(lo + d, _mm256_min_ps(e, _mm256_loadu_ps(lo + d)));
        }
    }
    for (int64_t i = 0; i < r.n_q; ++i) {
        for (int64_t d = 0; d < r.nd; d += 8)
            _mm256_storeu_ps(x + d, max_abs(_mm256_loadu_ps(x + d), load_run(r.q + i * r.dim, d, r.nd, r.last)));
    }
    for (int64_t d = 0; d < r.nd; d += 8) {
        const __m256 m = _mm256_div_ps(_mm256_loadu_ps(mean + d), _mm256_set1_ps(float(r.n_kv)));
        _mm256_storeu_ps(mean + d, m);
        const __m256 span =
            _mm256_max_ps(_mm256_sub_ps(_mm256_loadu_ps(hi + d), m), _mm256_sub_ps(m, _mm256_loadu_ps(lo + d)));
        _mm256_storeu_ps(hi + d, _mm256_max_ps(span, _mm256_setzero_ps()));
    }
    for (int64_t d = 0; d < r.nc; ++d) {
        const float f = std::sqrt(hi[d] / x[d]);
        lo[d] = std::isfinite(f) && f > 0.0f ? f : 1.0f;  // (a channel of zeros, or inf / NaN: as it is)
        x[d] = 1.0f / lo[d];
    }
    for (int64_t d = r.nc; d < r.nd; ++d) x[d] = 0.0f;
    for (int64_t hh = 0; hh < r.heads; ++hh) {
        std::memcpy(r.head(hh) + r.lay.smooth, lo + hh * r.dh, size_t(r.dh) * sizeof(float));
    }
    for (int64_t j = 0; j < r.n_kv; ++j) {
        for (int64_t d = 0; d < r.nd; d += 8) {
            const __m256 e = _mm256_sub_ps(load_run(r.k + j * r.dim, d, r.nd, r.last), _mm256_loadu_ps(mean + d));
            _mm256_storeu_ps(y + d, _mm256_mul_ps(e, _mm256_loadu_ps(x + d)));
        }
        for (int64_t hh = 0; hh < r.heads; ++hh) {
            uint8_t * out = r.head(hh);
            alignas(32) int16_t q16[kMaxHead + 8] = {};
            reinterpret_cast<float *>(out + r.lay.k_scales)[j] = quantize_i16(y + hh * r.dh, r.dh, r.lay.qmax, q16);
            for (int64_t g = 0; g < r.lay.pairs; ++g) std::memcpy(out + r.lay.key_byte(j, g), q16 + 2 * g, 4);
        }
    }
}

// values: int16 per channel per block of 64 keys (scale: max |v| / kVmax), per pair of keys and 16 channels 64
// bytes of (channel lane x 2 int16 keys). buf: 2 nd floats
AVX2_TARGET void pack_values(const Run & r, float * buf) {
    float *scale = buf, *x = buf + r.nd;  // per channel of the block: the scale and its inverse
    const int64_t nv = r.lay.dv / 16, hd = round_up(r.dh, 8);
    const __m256 vlim = _mm256_set1_ps(kVmax);
    const __m256i head_last = tail_mask(r.dh - (hd - 8));  // a head's last vector
    alignas(64) int16_t tmp[kKeys][kMaxHead];
    for (int64_t blk = 0; blk < r.lay.blocks; ++blk) {
        const int64_t j0 = blk * kKeys, nk = std::min(kKeys, r.n_kv - j0);
        for (int64_t d = 0; d < r.nd; d += 8) _mm256_storeu_ps(scale + d, _mm256_setzero_ps());
        for (int64_t j = j0; j < j0 + nk; ++j) {
            for (int64_t d = 0; d < r.nd; d += 8) {
                const __m256 e = load_run(r.v + j * r.dim, d, r.nd, r.last);
                _mm256_storeu_ps(scale + d, max_abs(_mm256_loadu_ps(scale + d), e));
            }
        }
        for (int64_t d = 0; d < r.nd; d += 8) {
            const __m256 sc = _mm256_div_ps(_mm256_loadu_ps(scale + d), vlim);
            _mm256_storeu_ps(scale + d, sc);
            const __m256 nz = _mm256_cmp_ps(sc, _mm256_setzero_ps(), _CMP_NEQ_UQ);
            _mm256_storeu_ps(x + d, _mm256_and_ps(nz, _mm256_div_ps(_mm256_set1_ps(1.0f), sc)));
        }
        for (int64_t hh = 0; hh < r.heads; ++hh) {
            for (int64_t j = 0; j < kKeys; ++j) {  // zeros past the block's keys and past the head's channels
                if (j >= nk) {
                    std::memset(tmp[j], 0, size_t(r.lay.dv) * sizeof(int16_t));
                } else if (hd < r.lay.dv) {
                    std::memset(tmp[j] + hd, 0, size_t(r.lay.dv - hd) * sizeof(int16_t));
                }
            }
            for (int64_t j = 0; j < nk; ++j) {
                for (int64_t d = 0; d < hd; d += 8) {
                    const __m256i m = d + 8 < hd ? _mm256_set1_epi32(-1) : head_last;
                    const __m256 e = _mm256_maskload_ps(r.v + (j0 + j) * r.dim + hh * r.dh + d, m);
                    const __m256 xs = _mm256_maskload_ps(x + hh * r.dh + d, m);
                    _mm_store_si128(reinterpret_cast<__m128i *>(tmp[j] + d), round_i16x8(_mm256_mul_ps(e, xs), vlim));
                }
            }
            uint8_t * out = r.head(hh) + r.lay.v_off + size_t(blk) * r.lay.v_block;
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
            std::memcpy(out + kKeys * r.lay.dv * 2, scale + hh * r.dh, size_t(r.dh) * sizeof(float));
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
    if (ith == 0) {  // the attention op's work counters, after the heads
        const HeadLayout lay(dst->src[0]->ne[0], dst->src[0]->ne[2]);
        int8::WorkCounters::at(dst->data, lay.counters(units)).clear();
    }
    for (int64_t u = units * ith / nth, u1 = units * (ith + 1) / nth; u < u1;) {
        const int64_t b = u / n_head, h0 = u % n_head, h1 = std::min(n_head, h0 + (u1 - u));
        const Run run(dst, b, h0, h1);
        std::memset(run.out, 0, size_t(run.heads) * run.lay.stride);
        std::vector<float> buf(size_t(run.nd) * 5 + 8);
        pack_keys(run, buf.data());
        pack_values(run, buf.data());
        u += h1 - h0;
    }
}

}  // namespace mcv::attn

#endif  // MINICPMV_ATTN_X86
