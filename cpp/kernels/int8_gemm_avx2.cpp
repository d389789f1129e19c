// Our 256-bit int8 kernels for x86 without AVX-512: AVX-VNNI (at dpbusd below) and AVX2, one tile for both.
// AVX2 (Haswell and later, Zen 1-3): the packed panels of int8_gemm.h with the weights stored signed, read 16
// outputs (two 256-bit vectors) at a time. Each group of 4 inputs is VPSIGNB (the activation's sign onto the
// weight, so both VPMADDUBSW operands stay within 127 and its int16 pair sums cannot saturate), VPMADDUBSW,
// VPMADDWD; the int32 block sums are exact and the float steps are the VNNI kernel's, so the numbers are its.
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

template <InputAct A>
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
        const __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(qi[0], qi[1]), _mm256_packs_epi32(qi[2], qi[3]));
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(q + j0), _mm256_permutevar8x32_epi32(packed, order));
        d[b] = scale;
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

// How a 256-bit tile multiplies a group of 4 inputs: the AVX2 kernel's VPSIGNB + VPMADDUBSW + VPMADDWD, or
// VPDPBUSD in AVX-VNNI's encoding (vex) or AVX512-VL's (evex)
enum class Dot8 { avx2, vex, evex };

// one group of 4 inputs into the int32 sums of MR rows x 16 outputs (wg: the group's 64 bytes for them)
template <int MR, Dot8 D>
AVX2_TARGET inline __attribute__((always_inline)) void group(__m256i (&sum)[MR][2], const uint8_t * const (&qa)[MR],
                                                             int64_t b, int64_t g, const uint8_t * wg) {
    const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i *>(wg));
    const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i *>(wg + 32));
    __m256i abs0 = w0, abs1 = w1;
    if constexpr (D == Dot8::avx2) {  // (signed weights: their magnitudes, shared by the rows)
        abs0 = _mm256_sign_epi8(w0, w0);
        abs1 = _mm256_sign_epi8(w1, w1);
    }
    for (int i = 0; i < MR; ++i) {
        int32_t four;
        std::memcpy(&four, qa[i] + b * kBlock + g * 4, 4);
        const __m256i a = _mm256_set1_epi32(four);
        if constexpr (D == Dot8::avx2) {
            const __m256i ones = _mm256_set1_epi16(1);
            const __m256i p0 = _mm256_maddubs_epi16(abs0, _mm256_sign_epi8(a, w0));
            const __m256i p1 = _mm256_maddubs_epi16(abs1, _mm256_sign_epi8(a, w1));
            sum[i][0] = _mm256_add_epi32(sum[i][0], _mm256_madd_epi16(p0, ones));
            sum[i][1] = _mm256_add_epi32(sum[i][1], _mm256_madd_epi16(p1, ones));
        } else {
            sum[i][0] = dpbusd<D == Dot8::vex>(sum[i][0], w0, a);
            sum[i][1] = dpbusd<D == Dot8::vex>(sum[i][1], w1, a);
        }
    }
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
            sum[i][0] = sum[i][1] = D == Dot8::avx2 ? _mm256_setzero_si256() : _mm256_set1_epi32(ca[i][b]);
        }
        if constexpr (D == Dot8::avx2) {  // (the unroll each form runs fastest with here)
#pragma GCC unroll 2
            for (int64_t g = 0; g < kGroups; ++g) group<MR, D>(sum, qa, b, g, wb + (g * kVectors + c) * 64);
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
    for (int64_t c = 0; c < kVectors && c * 16 < cols; ++c) {
        switch (rows) {
            case 4: tile16<4, D>(act, lay, panel, c, out, ldo, cols, bias); break;
            case 3: tile16<3, D>(act, lay, panel, c, out, ldo, cols, bias); break;
            case 2: tile16<2, D>(act, lay, panel, c, out, ldo, cols, bias); break;
            default: tile16<1, D>(act, lay, panel, c, out, ldo, cols, bias); break;
        }
    }
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
    tile_rows_t<Dot8::avx2>(rows, act, lay, panel, out, ldo, cols, bias);
}

void quantize_row_avx2(const float * x, int64_t k, uint8_t * row, const ActLayout & lay, InputAct act) {
    if (act == InputAct::gelu_tanh) return quantize_row_t<InputAct::gelu_tanh>(x, k, row, lay);
    if (act == InputAct::gelu_erf) return quantize_row_t<InputAct::gelu_erf>(x, k, row, lay);
    quantize_row_t<InputAct::none>(x, k, row, lay);
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
