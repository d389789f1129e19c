// Our 256-bit int8 kernels for x86 without AVX-512: AVX-VNNI (at dpbusd below) and AVX2, one tile for both.
// AVX2 (Haswell and later, Zen 1-3): the weights stored signed, per pair of inputs 8 outputs x 2 (PackedWeight::
// put_block), and the activations as int16 (quantize_row_avx2 on its layout: the same integers as the int8 rows). Each
// pair of inputs is VPMOVSXBW (16 outputs' weights to int16, shared by the tile's rows) and, per row, VPMADDWD +
// VPADDD: one multiply per 16 products, where the usual VPSIGNB + VPMADDUBSW + VPMADDWD (3 multiply-pipe instructions
// per 32) keeps the unit at most two thirds busy. The int32 block sums are exact and the float steps are the VNNI
// kernel's, so the numbers are its.
// This file is built without AVX-512 (CMakeLists.txt), so the code that runs when int8="avx2" or "avxvnni" is
// forced on an AVX-512 machine is the code a CPU without it runs: 16 vector registers, no EVEX forms (but the one
// instruction that names it).
#include "kernels/int8_layout.h"

#ifdef MINICPMV_X86

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "kernels/simd_math.h"

#define AVX2_TARGET __attribute__((target("avx2,fma")))

namespace mcv::int8 {
namespace {

using namespace simd::gelu;  // NOLINT: its constants
using simd::hmax_256;
using simd::hsum_256;

AVX2_TARGET inline __m256 gelu_256(__m256 x) {
    const __m256 t =
        _mm256_mul_ps(x, _mm256_fmadd_ps(_mm256_mul_ps(x, x), _mm256_set1_ps(kGeluA), _mm256_set1_ps(kGeluC)));
    const __m256 e = simd::exp2_256(_mm256_mul_ps(t, _mm256_set1_ps(-1.44269504088896341f)));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

AVX2_TARGET inline __m256 gelu_erf_256(__m256 x) {
    const __m256 z = _mm256_mul_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), x), _mm256_set1_ps(0.70710678118654752f));
    const __m256 t =
        _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(z, _mm256_set1_ps(kErfP), _mm256_set1_ps(1.0f)));
    __m256 p = _mm256_fmadd_ps(t, _mm256_set1_ps(kErfA5), _mm256_set1_ps(kErfA4));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(kErfA3));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(kErfA2));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(kErfA1));
    const __m256 e = simd::exp2_256(_mm256_mul_ps(_mm256_mul_ps(z, z), _mm256_set1_ps(-kLog2e)));
    const __m256 q = _mm256_mul_ps(_mm256_mul_ps(p, t), e);
    const __m256 neg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
    const __m256 s = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), q), q, neg);
    return _mm256_mul_ps(_mm256_mul_ps(x, _mm256_set1_ps(0.5f)), s);
}

template <InputAct A> AVX2_TARGET inline __m256 act_256(__m256 x) {
    if constexpr (A == InputAct::gelu_tanh) return gelu_256(x);
    if constexpr (A == InputAct::gelu_erf) return gelu_erf_256(x);
    return x;
}

// the row's values as int8 with the corrections (AVX-VNNI), or as int16 clamped to int8's range (AVX2: the same
// integers, NaN's included)
template <InputAct A, bool kI16>
AVX2_TARGET void quantize_row_t(const float * x, int64_t k, uint8_t * row, const ActLayout & lay) {
    auto * q = reinterpret_cast<int8_t *>(row);
    auto * d = reinterpret_cast<float *>(row + lay.scales());
    auto * corr = reinterpret_cast<int32_t *>(row + lay.corrections());
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);  // undoes the packs' lane interleave
    alignas(32) float tail[kBlock];
    for (int64_t b = 0; b < lay.blocks; ++b) {
        const int64_t j0 = b * kBlock, n = std::min<int64_t>(kBlock, k - j0);
        const float * src = x + j0;
        if (n < kBlock) {  // the last, partial block: zeros past k, as the VNNI kernel's masked loads
            std::memset(tail, 0, sizeof(tail));
            std::memcpy(tail, src, size_t(n) * sizeof(float));
            src = tail;
        }
        __m256 v[4];
        for (int i = 0; i < 4; ++i) v[i] = act_256<A>(_mm256_loadu_ps(src + 8 * i));
        const __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                                       _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
        const float scale = hmax_256(m) / 127.0f;
        const __m256 inv = _mm256_set1_ps(scale != 0.0f ? 1.0f / scale : 0.0f);
        __m256i qi[4];
        for (int i = 0; i < 4; ++i) qi[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], inv));  // round to nearest (even)
        d[b] = scale;
        if constexpr (kI16) {
            const __m256i lo = _mm256_set1_epi16(-128), hi = _mm256_set1_epi16(127);
            for (int h = 0; h < 2; ++h) {  // (packs interleaves the 128-bit lanes; the permute puts them back)
                const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(qi[2 * h], qi[2 * h + 1]), 0xd8);
                _mm256_storeu_si256(reinterpret_cast<__m256i *>(row + (j0 + 16 * h) * 2),
                                    _mm256_min_epi16(_mm256_max_epi16(w, lo), hi));
            }
            continue;
        }
        const __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(qi[0], qi[1]), _mm256_packs_epi32(qi[2], qi[3]));
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(q + j0), _mm256_permutevar8x32_epi32(packed, order));
        corr[b] = -128 * hsum_256(_mm256_add_epi32(_mm256_add_epi32(qi[0], qi[1]), _mm256_add_epi32(qi[2], qi[3])));
    }
}

// The 256-bit VPDPBUSD kernel ("avxvnni"): AVX-VNNI, on Intel's client cores from Alder Lake (which have no
// AVX-512) and AMD's from Zen 5, or the same instruction through AVX512-VL where that is what the CPU has. It reads
// the VNNI kernel's panels (weights + 128, VPDPBUSD's unsigned operand) and the AVX2 kernel's activation rows
// (which carry the corrections for the + 128): one instruction per 32 products, the int32 sums starting at the
// correction. The two encodings are one instruction apart; it is written as an assembler statement ({vex} picks
// AVX-VNNI's), so one body, built for AVX2 (16 registers), serves both.
template <bool kVex> AVX2_TARGET inline __m256i dpbusd(__m256i acc, __m256i u8, __m256i s8) {
    if constexpr (kVex) {
        __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(u8), "x"(s8));
    } else {
        __asm__("vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(u8), "x"(s8));
    }
    return acc;
}

// How a 256-bit tile multiplies its block: AVX2's int16 pairs (VPMADDWD), or groups of 4 inputs by VPDPBUSD in
// AVX-VNNI's encoding (vex) or AVX512-VL's (evex)
enum class Dot8 { i16, vex, evex };

// one group of 4 inputs into the int32 sums of MR rows x 16 outputs (wg: the group's 64 bytes for them; VPDPBUSD)
template <int MR, Dot8 D>
AVX2_TARGET inline __attribute__((always_inline)) void group(__m256i (&sum)[MR][2], const uint8_t * const (&qa)[MR],
                                                             int64_t b, int64_t g, const uint8_t * wg) {
    const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i *>(wg));
    const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i *>(wg + 32));
    for (int i = 0; i < MR; ++i) {
        int32_t four;
        std::memcpy(&four, qa[i] + b * kBlock + g * 4, 4);
        const __m256i a = _mm256_set1_epi32(four);
        sum[i][0] = dpbusd<D == Dot8::vex>(sum[i][0], w0, a);
        sum[i][1] = dpbusd<D == Dot8::vex>(sum[i][1], w1, a);
    }
}

// one pair of inputs into the int32 sums of MR rows x 16 outputs (wp: the pair's 16 outputs x 2 int8 weights;
// the rows: int16; VPMADDWD). The full tile's step is written in assembler below: left to itself GCC loads all
// four rows' pairs first and keeps one of the eight sums on the stack, a store and a load on its chain every
// step (the tile then runs at 0.6 of this form's rate)
template <int MR>
AVX2_TARGET inline __attribute__((always_inline)) void pair(__m256i (&sum)[MR][2], const uint8_t * const (&qa)[MR],
                                                            int64_t j, const uint8_t * wp) {
    const __m256i w0 = _mm256_cvtepi8_epi16(_mm_load_si128(reinterpret_cast<const __m128i *>(wp)));
    const __m256i w1 = _mm256_cvtepi8_epi16(_mm_load_si128(reinterpret_cast<const __m128i *>(wp + 16)));
    for (int i = 0; i < MR; ++i) {
        int32_t two;
        std::memcpy(&two, qa[i] + j * 2, 4);
        const __m256i a = _mm256_set1_epi32(two);
        sum[i][0] = _mm256_add_epi32(sum[i][0], _mm256_madd_epi16(w0, a));
        sum[i][1] = _mm256_add_epi32(sum[i][1], _mm256_madd_epi16(w1, a));
    }
}

template <>
AVX2_TARGET inline __attribute__((always_inline)) void pair<4>(__m256i (&sum)[4][2], const uint8_t * const (&qa)[4],
                                                               int64_t j, const uint8_t * wp) {
    __m256i w0, w1, t, p;
    __asm__("vpmovsxbw %[wm0], %[w0]\n\t"
            "vpmovsxbw %[wm1], %[w1]\n\t"
            "vpbroadcastd %[a0], %[t]\n\t"
            "vpmaddwd %[t], %[w0], %[p]\n\t"
            "vpaddd %[p], %[s00], %[s00]\n\t"
            "vpmaddwd %[t], %[w1], %[p]\n\t"
            "vpaddd %[p], %[s01], %[s01]\n\t"
            "vpbroadcastd %[a1], %[t]\n\t"
            "vpmaddwd %[t], %[w0], %[p]\n\t"
            "vpaddd %[p], %[s10], %[s10]\n\t"
            "vpmaddwd %[t], %[w1], %[p]\n\t"
            "vpaddd %[p], %[s11], %[s11]\n\t"
            "vpbroadcastd %[a2], %[t]\n\t"
            "vpmaddwd %[t], %[w0], %[p]\n\t"
            "vpaddd %[p], %[s20], %[s20]\n\t"
            "vpmaddwd %[t], %[w1], %[p]\n\t"
            "vpaddd %[p], %[s21], %[s21]\n\t"
            "vpbroadcastd %[a3], %[t]\n\t"
            "vpmaddwd %[t], %[w0], %[p]\n\t"
            "vpaddd %[p], %[s30], %[s30]\n\t"
            "vpmaddwd %[t], %[w1], %[p]\n\t"
            "vpaddd %[p], %[s31], %[s31]"
            : [s00] "+x"(sum[0][0]), [s01] "+x"(sum[0][1]), [s10] "+x"(sum[1][0]), [s11] "+x"(sum[1][1]),
              [s20] "+x"(sum[2][0]), [s21] "+x"(sum[2][1]), [s30] "+x"(sum[3][0]), [s31] "+x"(sum[3][1]),
              [w0] "=&x"(w0), [w1] "=&x"(w1), [t] "=&x"(t), [p] "=&x"(p)
            : [wm0] "m"(*reinterpret_cast<const __m128i *>(wp)), [wm1] "m"(*reinterpret_cast<const __m128i *>(wp + 16)),
              [a0] "m"(*reinterpret_cast<const int32_t *>(qa[0] + j * 2)),
              [a1] "m"(*reinterpret_cast<const int32_t *>(qa[1] + j * 2)),
              [a2] "m"(*reinterpret_cast<const int32_t *>(qa[2] + j * 2)),
              [a3] "m"(*reinterpret_cast<const int32_t *>(qa[3] + j * 2)));
}

// out[i][0:16] for the panel's outputs 16c .. 16c + 15 and MR activation rows; `cols` of them are stored. The
// int32 sums stay in registers through a block; the float accumulators live in a small array (touched once per
// block), which keeps the inner loop within AVX2's 16 registers. The float steps are the VNNI kernel's.
template <int MR, Dot8 D>
AVX2_TARGET void tile16(const uint8_t * act, const ActLayout & lay, const uint8_t * panel, int64_t c, float * out,
                        int64_t ldo, int64_t cols, const float * bias) {
    alignas(32) float acc[MR][16] = {};
    const float * sa[MR];
    const int32_t * ca[MR];
    const uint8_t * qa[MR];
    for (int i = 0; i < MR; ++i) {
        qa[i] = act + i * lay.stride;
        sa[i] = reinterpret_cast<const float *>(qa[i] + lay.scales());
        ca[i] = reinterpret_cast<const int32_t *>(qa[i] + lay.corrections());
    }
    for (int64_t b = 0; b < lay.blocks; ++b) {
        const uint8_t * wb = panel + size_t(b) * kBlockBytes;
        __m256i sum[MR][2];
        for (int i = 0; i < MR; ++i) {  // VPDPBUSD's start at the correction for its weights + 128
            sum[i][0] = sum[i][1] = D == Dot8::i16 ? _mm256_setzero_si256() : _mm256_set1_epi32(ca[i][b]);
        }
        if constexpr (D == Dot8::i16) {  // per pair of inputs: 6 x 16 bytes (8 outputs x 2), ours at 2c and 2c + 1
#pragma GCC unroll 2
            for (int64_t p = 0; p < kBlock / 2; ++p)
                pair<MR>(sum, qa, b * kBlock + 2 * p, wb + p * kPanel * 2 + c * 32);
        } else {
#pragma GCC unroll 8
            for (int64_t g = 0; g < kGroups; ++g) group<MR, D>(sum, qa, b, g, wb + (g * kVectors + c) * 64);
        }
        const auto * sw = reinterpret_cast<const float *>(wb + kBlockInts) + c * 16;
        for (int h = 0; h < 2; ++h) {
            const __m256 s = _mm256_loadu_ps(sw + h * 8);
            for (int i = 0; i < MR; ++i) {
                const __m256 scale = _mm256_mul_ps(s, _mm256_set1_ps(sa[i][b]));
                const __m256 prev = _mm256_load_ps(acc[i] + h * 8);
                _mm256_store_ps(acc[i] + h * 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[i][h]), scale, prev));
            }
        }
    }
    const int64_t left = std::clamp<int64_t>(cols - c * 16, 0, 16);
    if (bias) {
        for (int i = 0; i < MR; ++i) {
            for (int64_t j = 0; j < left; ++j) acc[i][j] += bias[c * 16 + j];
        }
    }
    for (int i = 0; i < MR; ++i) std::memcpy(out + i * ldo + c * 16, acc[i], size_t(left) * sizeof(float));
}

template <Dot8 D>
AVX2_TARGET void tile_rows_t(int rows, const uint8_t * act, const ActLayout & lay, const uint8_t * panel, float * out,
                             int64_t ldo, int64_t cols, const float * bias) {
    each_tile16(rows, cols, [&](auto mr, int64_t c) { tile16<mr, D>(act, lay, panel, c, out, ldo, cols, bias); });
}

template <bool kVex> AVX2_TARGET double chains256(int64_t iters) {
    constexpr int kChains = 12;  // enough independent accumulators to cover the instruction's latency
    __m256i acc[kChains];
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_epi32(i);
    __m256i a = _mm256_set1_epi8(3);
    const __m256i b = _mm256_set1_epi8(5);
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t it = 0; it < iters; ++it) {
        for (int i = 0; i < kChains; ++i) acc[i] = dpbusd<kVex>(acc[i], a, b);
        __asm__ volatile("" : "+x"(a));  // keeps the loop from being folded
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    __m256i total = acc[0];
    for (int i = 1; i < kChains; ++i) total = _mm256_add_epi32(total, acc[i]);
    volatile int sink = hsum_256(total);
    (void)sink;
    return double(iters) * kChains * 32 * 2 / s / 1e9;
}

}  // namespace

void tile_rows_avx2(int rows, const uint8_t * act, const ActLayout & lay, const uint8_t * panel, float * out,
                    int64_t ldo, int64_t cols, const float * bias) {
    tile_rows_t<Dot8::i16>(rows, act, lay, panel, out, ldo, cols, bias);
}

void quantize_row_avx2(const float * x, int64_t k, uint8_t * row, const ActLayout & lay, InputAct act) {
    if (lay.width == 2) {  // (the AVX2 kernel's rows)
        if (act == InputAct::gelu_tanh) return quantize_row_t<InputAct::gelu_tanh, true>(x, k, row, lay);
        if (act == InputAct::gelu_erf) return quantize_row_t<InputAct::gelu_erf, true>(x, k, row, lay);
        return quantize_row_t<InputAct::none, true>(x, k, row, lay);
    }
    if (act == InputAct::gelu_tanh) return quantize_row_t<InputAct::gelu_tanh, false>(x, k, row, lay);
    if (act == InputAct::gelu_erf) return quantize_row_t<InputAct::gelu_erf, false>(x, k, row, lay);
    quantize_row_t<InputAct::none, false>(x, k, row, lay);
}

AVX2_TARGET double madd_chains(int64_t iters) {
    // each chain with its own multiplicand, so no product is shared between chains; 6 of them (12 registers, with
    // the multiplier and the ones 14: within AVX2's 16, so the accumulators never go through memory)
    constexpr int kChains = 6;
    __m256i acc[kChains], b[kChains];
    for (int i = 0; i < kChains; ++i) {
        acc[i] = _mm256_set1_epi32(i);
        b[i] = _mm256_set1_epi8(char(5 + i));
    }
    __m256i a = _mm256_set1_epi8(3);
    const __m256i ones = _mm256_set1_epi16(1);
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t it = 0; it < iters; ++it) {
        for (int i = 0; i < kChains; ++i) {
            acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b[i]), ones));
        }
        __asm__ volatile("" : "+x"(a));  // a new multiplier each round: the products cannot be hoisted
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    __m256i total = acc[0];
    for (int i = 1; i < kChains; ++i) total = _mm256_add_epi32(total, acc[i]);
    volatile int sink = hsum_256(total);
    (void)sink;
    return double(iters) * kChains * 32 * 2 / s / 1e9;
}

bool avx_vnni_vex() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avxvnni");
}

void tile_rows_vnni256(int rows, const uint8_t * act, const ActLayout & lay, const uint8_t * panel, float * out,
                       int64_t ldo, int64_t cols, const float * bias, bool vex) {
    if (vex) return tile_rows_t<Dot8::vex>(rows, act, lay, panel, out, ldo, cols, bias);
    tile_rows_t<Dot8::evex>(rows, act, lay, panel, out, ldo, cols, bias);
}

double dpbusd256_chains(int64_t iters) { return avx_vnni_vex() ? chains256<true>(iters) : chains256<false>(iters); }

}  // namespace mcv::int8

#endif  // MINICPMV_X86
