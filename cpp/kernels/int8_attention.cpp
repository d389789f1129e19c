#include "kernels/int8_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <stdexcept>

#include "kernels/int8_attention_pack.h"
#include "kernels/int8_layout.h"
#include "kernels/simd_math.h"

#ifdef MINICPMV_ATTN_X86  // (int8_attention_pack.h)
#include <immintrin.h>
#define VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#define AVX2_TARGET __attribute__((target("avx2,fma")))
#endif

namespace mcv {
namespace {

#ifdef MINICPMV_ATTN_X86

using namespace attn;  // NOLINT: the packed heads' layout (int8_attention_pack.h)

constexpr int64_t kRows = 16;  // query rows per tile (one job)
constexpr int64_t kMinKeys = 32;
constexpr int kPvRows = 2, kPvVectors = 5;  // the weights-by-values tile: 2 rows x up to 5 vectors
// the weights' largest int16 (with the values' kVmax: 64 products cannot overflow a block's int32 sums)
constexpr float kPmax = 8191.0f;
constexpr float kLog2e = 1.44269504088896341f;

// what the ops' userdata points to
const Int8Isa kIsas[] = {Int8Isa::none, Int8Isa::vnni, Int8Isa::avx2, Int8Isa::avxvnni};

// A tile's working set (on the worker's stack): int16 queries with their scales, scores, weights, outputs, and the
// online softmax's running max and sum per row.
struct Tile {
    alignas(64) int16_t q[kRows][kMaxHead];  // queries (quantize_i16)
    alignas(64) float s[kRows][kKeys];
    alignas(64) int16_t p[kRows][kKeys];  // weights x kPmax / the block's largest
    alignas(64) float o[kRows][kMaxHead];
    float qs[kRows], m[kRows], l[kRows], alpha[kRows], ps[kRows];
    float bm[kRows];   // each row's largest score in the block (the score kernels leave it)
    float inv[kRows];  // Q / the block's largest weight (0: the block is negligible for the row)
};

// the tile's query rows as int16, one scale per row (times log2(e) / sqrt(d_head): scores come out in base 2)
// (times the channels' factors, pack_op)
void quantize_queries(Tile & t, const float * q0, int64_t row_stride, int64_t rows, const HeadLayout & lay,
                      const float * f) {
    const float c = kLog2e / std::sqrt(float(lay.dh));
    float x[kMaxHead];
    for (int64_t i = 0; i < kRows; ++i) {
        std::memset(t.q[i], 0, size_t(lay.pairs * 4));
        t.qs[i] = 0.0f;
        if (i >= rows) continue;  // padding rows: zeros, never stored
        for (int64_t d = 0; d < lay.dh; ++d) x[d] = q0[i * row_stride + d] * f[d];
        t.qs[i] = quantize_i16(x, lay.dh, lay.qmax, t.q[i]) * c;
    }
}

// the last block's keys past n_kv get no weight: their scores -inf, the rows' block max without them
void mask_tail(Tile & t, int64_t nk) {
    if (nk >= kKeys) return;
    for (int64_t i = 0; i < kRows; ++i) {
        for (int64_t j = nk; j < kKeys; ++j) t.s[i][j] = -std::numeric_limits<float>::infinity();
        t.bm[i] = *std::max_element(t.s[i], t.s[i] + nk);
    }
}

using simd::exp2_256;
using simd::exp2_512;
using simd::hmax_256;
using simd::hsum_256;

// p[j] = round(2^(s[j] - m) * inv) as int16 for a block of 64; returns their sum
VNNI_TARGET float weights_512(const float * s, float m, float inv, int16_t * p) {
    const __m512 vm = _mm512_set1_ps(m), vi = _mm512_set1_ps(inv);
    __m512i sum = _mm512_setzero_si512();
    for (int v = 0; v < 4; ++v) {
        const __m512 x = _mm512_mul_ps(exp2_512(_mm512_sub_ps(_mm512_loadu_ps(s + v * 16), vm)), vi);
        const __m512i q = _mm512_cvtps_epi32(x);
        sum = _mm512_add_epi32(sum, q);
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(p + v * 16), _mm512_cvtsepi32_epi16(q));
    }
    return float(_mm512_reduce_add_epi32(sum));
}

AVX2_TARGET float weights_256(const float * s, float m, float inv, int16_t * p) {
    const __m256 vm = _mm256_set1_ps(m), vi = _mm256_set1_ps(inv);
    __m256i sum = _mm256_setzero_si256();
    for (int v = 0; v < 8; v += 2) {
        __m256i q[2];
        for (int h = 0; h < 2; ++h) {
            const __m256 x = _mm256_mul_ps(exp2_256(_mm256_sub_ps(_mm256_loadu_ps(s + (v + h) * 8), vm)), vi);
            q[h] = _mm256_cvtps_epi32(x);
            sum = _mm256_add_epi32(sum, q[h]);
        }  // (packs interleaves the 128-bit lanes; the permute puts them back in order)
        const __m256i packed = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[0], q[1]), 0xd8);
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(p + v * 8), packed);
    }
    return float(hsum_256(sum));
}

// the online softmax's step for the tile's 16 rows (one vector): the new running max, the factor earlier sums are
// scaled by (alpha), the block's weight scale (ps: its largest weight / q) and its inverse; a block 2^-100 below
// a row's max (or NaN scores) gets no weight. Then the weights as integers, and the running sums.
VNNI_TARGET void softmax_vnni(Tile & t) {
    const float q = kPmax;
    const __m512 bm = _mm512_loadu_ps(t.bm), mo = _mm512_loadu_ps(t.m), mn = _mm512_max_ps(mo, bm);
    const __m512 d = _mm512_sub_ps(bm, mn);
    const __mmask16 keep = _mm512_cmp_ps_mask(d, _mm512_set1_ps(-100.0f), _CMP_GE_OQ);
    const __m512 pm = exp2_512(d);
    _mm512_storeu_ps(t.alpha, exp2_512(_mm512_sub_ps(mo, mn)));  // (the first block: 2^-126 x zero sums)
    _mm512_storeu_ps(t.m, mn);
    _mm512_storeu_ps(t.ps, _mm512_maskz_mul_ps(keep, pm, _mm512_set1_ps(1.0f / q)));
    _mm512_storeu_ps(t.inv, _mm512_maskz_div_ps(keep, _mm512_set1_ps(q), pm));
    for (int64_t i = 0; i < kRows; ++i) {
        const float total = weights_512(t.s[i], t.m[i], t.inv[i], t.p[i]);
        t.l[i] = t.l[i] * t.alpha[i] + t.ps[i] * total;
    }
}

AVX2_TARGET void softmax_avx2(Tile & t) {
    const float q = kPmax;
    for (int h = 0; h < kRows; h += 8) {
        const __m256 bm = _mm256_loadu_ps(t.bm + h), mo = _mm256_loadu_ps(t.m + h), mn = _mm256_max_ps(mo, bm);
        const __m256 d = _mm256_sub_ps(bm, mn);
        const __m256 keep = _mm256_cmp_ps(d, _mm256_set1_ps(-100.0f), _CMP_GE_OQ);
        const __m256 pm = exp2_256(d);
        _mm256_storeu_ps(t.alpha + h, exp2_256(_mm256_sub_ps(mo, mn)));
        _mm256_storeu_ps(t.m + h, mn);
        _mm256_storeu_ps(t.ps + h, _mm256_and_ps(keep, _mm256_mul_ps(pm, _mm256_set1_ps(1.0f / q))));
        _mm256_storeu_ps(t.inv + h, _mm256_and_ps(keep, _mm256_div_ps(_mm256_set1_ps(q), pm)));
    }
    for (int64_t i = 0; i < kRows; ++i) {
        const float total = weights_256(t.s[i], t.m[i], t.inv[i], t.p[i]);
        t.l[i] = t.l[i] * t.alpha[i] + t.ps[i] * total;
    }
}

// acc + the int16 pair products of a and b (VPDPWSSD) in place, from registers: with the intrinsic GCC copies the
// sums between registers every step, keeps one on the stack and reads weights from memory once per row
VNNI_TARGET inline __m512i dpwssd_512(__m512i acc, __m512i a, __m512i b) {
    __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
    return acc;
}

// scores of 4 query rows (from row r) x the block's 64 keys (VPDPWSSD: int16 pairs)
VNNI_TARGET void scores_vnni(Tile & t, int64_t r, const uint8_t * keys, const float * ks, int64_t pairs) {
    __m512i acc[4][4];
    for (int i = 0; i < 4; ++i) {
        for (int v = 0; v < 4; ++v) acc[i][v] = _mm512_setzero_si512();
    }
    for (int64_t g = 0; g < pairs; ++g) {
        __m512i w[4];
        for (int v = 0; v < 4; ++v) w[v] = _mm512_loadu_si512(keys + (v * pairs + g) * 64);
        for (int i = 0; i < 4; ++i) {
            int32_t two;
            std::memcpy(&two, t.q[r + i] + g * 2, 4);
            const __m512i a = _mm512_set1_epi32(two);
            for (int v = 0; v < 4; ++v) acc[i][v] = dpwssd_512(acc[i][v], w[v], a);
        }
    }
    __m512 mx[4];
    for (int v = 0; v < 4; ++v) {
        const __m512 sk = _mm512_loadu_ps(ks + v * 16);
        for (int i = 0; i < 4; ++i) {
            const __m512 x =
                _mm512_mul_ps(_mm512_cvtepi32_ps(acc[i][v]), _mm512_mul_ps(sk, _mm512_set1_ps(t.qs[r + i])));
            _mm512_storeu_ps(t.s[r + i] + v * 16, x);
            mx[i] = v == 0 ? x : _mm512_max_ps(mx[i], x);
        }
    }
    for (int i = 0; i < 4; ++i) t.bm[r + i] = _mm512_reduce_max_ps(mx[i]);
}

// How the 256-bit kernel multiplies int16 pairs and adds them to int32 sums: VPMADDWD + VPADDD (AVX2), or in one
// instruction, VPDPWSSD, where the products run on our AVX-VNNI kernel (its VEX form on AVX-VNNI CPUs, AVX512-VL's
// EVEX form elsewhere; written in assembler, as in int8_gemm_avx2.cpp). The same int32 sums either way: the same bits.
enum class Dot16 { madd, vex, evex };

template <Dot16 D> AVX2_TARGET inline __m256i dot16(__m256i acc, __m256i a, __m256i b) {
    if constexpr (D == Dot16::vex) {
        __asm__("%{vex%} vpdpwssd %2, %1, %0" : "+x"(acc) : "x"(a), "x"(b));
        return acc;
    } else if constexpr (D == Dot16::evex) {
        __asm__("vpdpwssd %2, %1, %0" : "+x"(acc) : "x"(a), "x"(b));
        return acc;
    } else {  // (the add in place: left to itself, GCC copies every sum to a new register and spills one)
        const __m256i p = _mm256_madd_epi16(a, b);
        __asm__("vpaddd %1, %0, %0" : "+x"(acc) : "x"(p));
        return acc;
    }
}

// scores of 2 query rows (from row r) x 32 of the block's keys (k0 .. k0 + 31: 16-key groups k0 / 16 and the
// next; VPMADDWD: int16 pairs)
template <Dot16 D>
AVX2_TARGET void scores_avx2(Tile & t, int64_t r, int64_t k0, const uint8_t * keys, const float * ks, int64_t pairs) {
    __m256i acc[2][4];
    for (int i = 0; i < 2; ++i) {
        for (int u = 0; u < 4; ++u) acc[i][u] = _mm256_setzero_si256();
    }
    for (int64_t g = 0; g < pairs; ++g) {
        int32_t f0, f1;
        std::memcpy(&f0, t.q[r] + g * 2, 4);
        std::memcpy(&f1, t.q[r + 1] + g * 2, 4);
        const __m256i a0 = _mm256_set1_epi32(f0), a1 = _mm256_set1_epi32(f1);
        for (int u = 0; u < 4; ++u) {
            const uint8_t * src = keys + ((k0 / 16 + u / 2) * pairs + g) * 64 + (u % 2) * 32;
            const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(src));
            acc[0][u] = dot16<D>(acc[0][u], w, a0);
            acc[1][u] = dot16<D>(acc[1][u], w, a1);
        }
    }
    __m256 mx[2];
    for (int u = 0; u < 4; ++u) {
        const __m256 sk = _mm256_loadu_ps(ks + k0 + u * 8);
        for (int i = 0; i < 2; ++i) {
            const __m256 x =
                _mm256_mul_ps(_mm256_cvtepi32_ps(acc[i][u]), _mm256_mul_ps(sk, _mm256_set1_ps(t.qs[r + i])));
            _mm256_storeu_ps(t.s[r + i] + k0 + u * 8, x);
            mx[i] = u == 0 ? x : _mm256_max_ps(mx[i], x);
        }
    }
    for (int i = 0; i < 2; ++i) t.bm[r + i] = k0 == 0 ? hmax_256(mx[i]) : std::max(t.bm[r + i], hmax_256(mx[i]));
}

// o[r .. r + MR)[16 c0 .. 16 (c0 + CV)) = o * alpha + ps * sv * (p . v) over the block's 64 keys (VPDPWSSD)
template <int MR, int CV>
VNNI_TARGET void pv_vnni(Tile & t, int64_t r, const uint8_t * vals, const float * sv, int64_t nv, int64_t c0) {
    __m512i acc[MR][CV];
    for (int i = 0; i < MR; ++i) {
        for (int c = 0; c < CV; ++c) acc[i][c] = _mm512_setzero_si512();
    }
    for (int64_t jp = 0; jp < kKeys / 2; ++jp) {
        __m512i w[CV];
        for (int c = 0; c < CV; ++c) w[c] = _mm512_loadu_si512(vals + (jp * nv + c0 + c) * 64);
        for (int i = 0; i < MR; ++i) {
            int32_t two;
            std::memcpy(&two, t.p[r + i] + jp * 2, 4);
            const __m512i a = _mm512_set1_epi32(two);
            for (int c = 0; c < CV; ++c) acc[i][c] = dpwssd_512(acc[i][c], a, w[c]);
        }
    }
    for (int c = 0; c < CV; ++c) {
        const __m512 s = _mm512_loadu_ps(sv + (c0 + c) * 16);
        for (int i = 0; i < MR; ++i) {
            float * o = t.o[r + i] + (c0 + c) * 16;
            const __m512 prev = _mm512_mul_ps(_mm512_loadu_ps(o), _mm512_set1_ps(t.alpha[r + i]));
            const __m512 sc = _mm512_mul_ps(s, _mm512_set1_ps(t.ps[r + i]));
            _mm512_storeu_ps(o, _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i][c]), sc, prev));
        }
    }
}

// the same for 2 rows and CH eight-channel halves from half h0 (VPMADDWD)
template <int CH, Dot16 D>
AVX2_TARGET void pv_avx2(Tile & t, int64_t r, const uint8_t * vals, const float * sv, int64_t nv, int64_t h0) {
    __m256i acc[2][CH];
    for (int i = 0; i < 2; ++i) {
        for (int c = 0; c < CH; ++c) acc[i][c] = _mm256_setzero_si256();
    }
    for (int64_t jp = 0; jp < kKeys / 2; ++jp) {
        int32_t f0, f1;
        std::memcpy(&f0, t.p[r] + jp * 2, 4);
        std::memcpy(&f1, t.p[r + 1] + jp * 2, 4);
        const __m256i a0 = _mm256_set1_epi32(f0), a1 = _mm256_set1_epi32(f1);
        for (int c = 0; c < CH; ++c) {
            const int64_t h = h0 + c;
            const __m256i w =
                _mm256_loadu_si256(reinterpret_cast<const __m256i *>(vals + (jp * nv + h / 2) * 64 + (h % 2) * 32));
            acc[0][c] = dot16<D>(acc[0][c], a0, w);
            acc[1][c] = dot16<D>(acc[1][c], a1, w);
        }
    }
    for (int c = 0; c < CH; ++c) {
        const __m256 s = _mm256_loadu_ps(sv + (h0 + c) * 8);
        for (int i = 0; i < 2; ++i) {
            float * o = t.o[r + i] + (h0 + c) * 8;
            const __m256 prev = _mm256_mul_ps(_mm256_loadu_ps(o), _mm256_set1_ps(t.alpha[r + i]));
            const __m256 sc = _mm256_mul_ps(s, _mm256_set1_ps(t.ps[r + i]));
            _mm256_storeu_ps(o, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i][c]), sc, prev));
        }
    }
}

VNNI_TARGET void block_vnni(Tile & t, const uint8_t * keys, const float * ks, const uint8_t * vals, const float * sv,
                            const HeadLayout & lay, int64_t nk) {
    for (int64_t r = 0; r < kRows; r += 4) scores_vnni(t, r, keys, ks, lay.pairs);
    mask_tail(t, nk);
    softmax_vnni(t);
    const int64_t nv = lay.dv / 16, chunks = (nv + kPvVectors - 1) / kPvVectors;
    for (int64_t r = 0; r < kRows; r += kPvRows) {
        for (int64_t ch = 0, c0 = 0; ch < chunks; ++ch) {
            const int64_t cv = (nv - c0) / (chunks - ch);
            switch (cv) {
                case 5: pv_vnni<kPvRows, 5>(t, r, vals, sv, nv, c0); break;
                case 4: pv_vnni<kPvRows, 4>(t, r, vals, sv, nv, c0); break;
                case 3: pv_vnni<kPvRows, 3>(t, r, vals, sv, nv, c0); break;
                case 2: pv_vnni<kPvRows, 2>(t, r, vals, sv, nv, c0); break;
                default: pv_vnni<kPvRows, 1>(t, r, vals, sv, nv, c0); break;
            }
            c0 += cv;
        }
    }
}

template <Dot16 D>
AVX2_TARGET void block_avx2(Tile & t, const uint8_t * keys, const float * ks, const uint8_t * vals, const float * sv,
                            const HeadLayout & lay, int64_t nk) {
    for (int64_t r = 0; r < kRows; r += 2) {
        scores_avx2<D>(t, r, 0, keys, ks, lay.pairs);
        scores_avx2<D>(t, r, 32, keys, ks, lay.pairs);
    }
    mask_tail(t, nk);
    softmax_avx2(t);
    const int64_t nv = lay.dv / 16, halves = lay.dv / 8;
    for (int64_t r = 0; r < kRows; r += 2) {
        for (int64_t h0 = 0; h0 < halves; h0 += 4) {
            switch (std::min<int64_t>(4, halves - h0)) {
                case 4: pv_avx2<4, D>(t, r, vals, sv, nv, h0); break;
                case 3: pv_avx2<3, D>(t, r, vals, sv, nv, h0); break;
                case 2: pv_avx2<2, D>(t, r, vals, sv, nv, h0); break;
                default: pv_avx2<1, D>(t, r, vals, sv, nv, h0); break;
            }
        }
    }
}

// dst [dh * H, n_q, B] = attention of q (src0) over the packed heads (src1); src2: k, for its shape. Jobs are
// (head, batch entry, tile of 16 query rows), each thread taking the next one as it becomes free (the work counters
// after the packed heads, as the int8 products': a slower core takes fewer).
void attention_op(ggml_tensor * dst, int ith, int nth, void * userdata) {
    (void)ith;
    const Int8Isa isa = *static_cast<const Int8Isa *>(userdata);
    const bool vnni = isa == Int8Isa::vnni;
    const Dot16 dot = isa != Int8Isa::avxvnni ? Dot16::madd : int8::avx_vnni_vex() ? Dot16::vex : Dot16::evex;
    const ggml_tensor * q = dst->src[0];
    const ggml_tensor * packed = dst->src[1];
    const ggml_tensor * k = dst->src[2];
    const int64_t dh = q->ne[0], n_head = q->ne[1], dim = dh * n_head, n_q = q->ne[2], n_kv = k->ne[2];
    const int64_t batch = k->ne[3], tiles = (n_q + kRows - 1) / kRows;
    const HeadLayout lay(dh, n_kv);
    Tile t;
    auto & work = int8::WorkCounters::at(packed->data, lay.counters(n_head * batch));
    for (int64_t job; (job = work.take()) < n_head * batch * tiles;) {
        const int64_t h = job % n_head, b = (job / n_head) % batch, r0 = job / (n_head * batch) * kRows;
        const int64_t rows = std::min(kRows, n_q - r0);
        const float * q0 =
            static_cast<const float *>(q->data) + (q->ne[3] == 1 ? 0 : b * n_q * dim) + r0 * dim + h * dh;
        const uint8_t * head = static_cast<const uint8_t *>(packed->data) + size_t(b * n_head + h) * lay.stride;
        quantize_queries(t, q0, dim, rows, lay, reinterpret_cast<const float *>(head + lay.smooth));
        for (int64_t i = 0; i < kRows; ++i) {
            t.m[i] = -std::numeric_limits<float>::infinity();
            t.l[i] = 0.0f;
            std::memset(t.o[i], 0, size_t(lay.dv) * sizeof(float));
        }
        const auto * ks = reinterpret_cast<const float *>(head + lay.k_scales);
        for (int64_t blk = 0; blk < lay.blocks; ++blk) {
            const uint8_t * keys = head + lay.key_byte(blk * kKeys, 0);
            const uint8_t * vb = head + lay.v_off + size_t(blk) * lay.v_block;
            const auto * sv = reinterpret_cast<const float *>(vb + kKeys * lay.dv * 2);
            const int64_t nk = std::min(kKeys, n_kv - blk * kKeys);
            if (vnni) {
                block_vnni(t, keys, ks + blk * kKeys, vb, sv, lay, nk);
            } else if (dot == Dot16::vex) {
                block_avx2<Dot16::vex>(t, keys, ks + blk * kKeys, vb, sv, lay, nk);
            } else if (dot == Dot16::evex) {
                block_avx2<Dot16::evex>(t, keys, ks + blk * kKeys, vb, sv, lay, nk);
            } else {
                block_avx2<Dot16::madd>(t, keys, ks + blk * kKeys, vb, sv, lay, nk);
            }
        }
        float * out = static_cast<float *>(dst->data) + b * n_q * dim + r0 * dim + h * dh;
        for (int64_t i = 0; i < rows; ++i) {
            const float inv = 1.0f / t.l[i];
            for (int64_t d = 0; d < dh; ++d) out[i * dim + d] = t.o[i][d] * inv;
        }
    }
    work.leave(nth);
}

#endif  // MINICPMV_ATTN_X86

}  // namespace

bool int8_attention_available(Int8Isa isa) {
#ifdef MINICPMV_ATTN_X86
    // (where our AVX-VNNI kernel runs the products, the 256-bit attention runs with VPDPWSSD)
    return (isa == Int8Isa::vnni || isa == Int8Isa::avx2 || isa == Int8Isa::avxvnni) && int8_isa_available(isa);
#else
    (void)isa;
    return false;
#endif
}

bool int8_attention_supports(Int8Isa isa, int64_t d_head, int64_t n_kv) {
#ifdef MINICPMV_ATTN_X86
    return int8_attention_available(isa) && d_head >= 1 && d_head <= kMaxHead && n_kv >= kMinKeys;
#else
    (void)d_head;
    (void)n_kv;
    return int8_attention_available(isa);
#endif
}

ggml_tensor * int8_attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, Int8Isa isa) {
#ifdef MINICPMV_ATTN_X86
    if (!int8_attention_supports(isa, q->ne[0], k->ne[2])) {
        throw std::invalid_argument("int8_attention: heads of " + std::to_string(q->ne[0]) + " over " +
                                    std::to_string(k->ne[2]) + " keys are not supported");
    }
    if (!ggml_is_contiguous(q)) q = ggml_cont(ctx, q);
    if (!ggml_is_contiguous(k)) k = ggml_cont(ctx, k);
    if (!ggml_is_contiguous(v)) v = ggml_cont(ctx, v);
    auto * which = const_cast<Int8Isa *>(std::find(std::begin(kIsas), std::end(kIsas), isa));  // (supported: there)
    const HeadLayout lay(k->ne[0], k->ne[2]);
    ggml_tensor * kvq[3] = {k, v, q};
    ggml_tensor * packed =
        ggml_custom_4d(ctx, GGML_TYPE_I8, int64_t(lay.counters(k->ne[1] * k->ne[3]) + sizeof(int8::WorkCounters)), 1, 1,
                       1, kvq, 3, pack_op, GGML_N_TASKS_MAX, which);
    ggml_set_name(packed, "attn pack");
    ggml_tensor * args[3] = {q, packed, k};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, q->ne[0] * q->ne[1], q->ne[2], k->ne[3], 1, args, 3, attention_op,
                          GGML_N_TASKS_MAX, which);
#else
    (void)ctx;
    (void)q;
    (void)k;
    (void)v;
    (void)isa;
    throw std::logic_error("int8_attention: this build has no int8 kernel");
#endif
}

}  // namespace mcv
