// Our int8 kernel on aarch64 (SDOT, armv8.2-a's dot-product extension: Raspberry Pi 5's Cortex-A76, Apple silicon,
// Graviton): the packed panels of int8_gemm.h with the weights stored signed, as the AVX2 kernel reads them. Each
// 64-byte group of a panel is 16 outputs x 4 inputs, i.e. four 128-bit vectors of 4 outputs x 4 inputs: exactly
// what SDOT's lanes multiply by 4 activations (one 32-bit lane of a vector of 16, chosen by index). The int32 block
// sums are exact, the float steps (scale = weight scale x activation scale, then one fused multiply-add per block)
// are the x86 kernels', so the numbers are theirs.
#include "kernels/int8_layout.h"

#ifdef MINICPMV_NEON

#include <arm_neon.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1 << 13)
#endif
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#endif

#if defined(__ARM_FEATURE_DOTPROD)
#define DOTPROD_TARGET
#elif defined(__clang__)
#define DOTPROD_TARGET __attribute__((target("dotprod")))
#else
#define DOTPROD_TARGET __attribute__((target("arch=armv8.2-a+dotprod")))  // (as arm_neon.h declares SDOT)
#endif
#if defined(__ARM_FEATURE_MATMUL_INT8)
#define I8MM_TARGET
#elif defined(__clang__)
#define I8MM_TARGET __attribute__((target("i8mm")))
#else
#define I8MM_TARGET __attribute__((target("arch=armv8.2-a+i8mm")))  // (as arm_neon.h declares SMMLA)
#endif

namespace mcv::int8 {

bool neon_dot_available() {
#if defined(__ARM_FEATURE_DOTPROD) || defined(__APPLE__)
    return true;  // (every Apple silicon core has it)
#elif defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
    return false;
#endif
}

bool neon_i8mm_available() {
#if defined(__ARM_FEATURE_MATMUL_INT8)
    return true;
#elif defined(__linux__)
    return (getauxval(AT_HWCAP2) & HWCAP2_I8MM) != 0 && neon_dot_available();
#elif defined(__APPLE__)
    int has = 0;
    size_t size = sizeof(has);
    return sysctlbyname("hw.optional.arm.FEAT_I8MM", &has, &size, nullptr, 0) == 0 && has != 0;
#else
    return false;
#endif
}

namespace {

// GELU's tanh form, as the x86 kernels compute it (x / (1 + e^-t)), in scalar code: the activations of one product
float gelu(float x) {
    const float t = x * (0.044715f * 1.5957691216057308f * x * x + 1.5957691216057308f);
    return x / (1.0f + std::exp(std::min(std::max(-t, -87.0f), 87.0f)));
}

// and the exact form, x/2 erfc(-x / sqrt 2)
float act(float x, InputAct a) {
    if (a == InputAct::gelu_tanh) return gelu(x);
    if (a == InputAct::gelu_erf) return 0.5f * x * std::erfc(-x * 0.70710678118654752f);
    return x;
}

}  // namespace

void quantize_row_neon(const float * x, int64_t k, uint8_t * row, const ActLayout & lay, InputAct a) {
    auto * q = reinterpret_cast<int8_t *>(row);
    auto * d = reinterpret_cast<float *>(row + lay.scales());
    auto * corr = reinterpret_cast<int32_t *>(row + lay.corrections());
    float v[kBlock];
    for (int64_t b = 0; b < lay.blocks; ++b) {
        const int64_t j0 = b * kBlock, n = std::min<int64_t>(kBlock, k - j0);
        for (int64_t j = 0; j < kBlock; ++j) v[j] = j < n ? act(x[j0 + j], a) : 0.0f;
        float32x4_t m = vabsq_f32(vld1q_f32(v));
        for (int i = 1; i < kBlock / 4; ++i) m = vmaxq_f32(m, vabsq_f32(vld1q_f32(v + 4 * i)));
        const float scale = vmaxvq_f32(m) / 127.0f;
        const float inv = scale != 0.0f ? 1.0f / scale : 0.0f;
        for (int i = 0; i < kBlock / 8; ++i) {  // round to nearest even, saturate to int8 (as the x86 kernels)
            const int32x4_t lo = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(v + 8 * i), inv));
            const int32x4_t hi = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(v + 8 * i + 4), inv));
            vst1_s8(q + j0 + 8 * i, vqmovn_s16(vcombine_s16(vqmovn_s32(lo), vqmovn_s32(hi))));
        }
        d[b] = scale;
        corr[b] = 0;  // (the weights are signed here)
    }
}

namespace {

// out[i][16c .. 16c + 15] for MR activation rows: int32 sums in registers through a block (4 rows x 4 vectors), the
// float accumulators in a small array
template <int MR>
DOTPROD_TARGET void tile16(const uint8_t * act, const ActLayout & lay, const uint8_t * panel, int64_t c, float * out,
                           int64_t ldo, int64_t cols, const float * bias) {
    float acc[MR][16] = {};
    const int8_t * qa[MR];
    const float * sa[MR];
    for (int i = 0; i < MR; ++i) {
        qa[i] = reinterpret_cast<const int8_t *>(act + i * lay.stride);
        sa[i] = reinterpret_cast<const float *>(act + i * lay.stride + lay.scales());
    }
    for (int64_t b = 0; b < lay.blocks; ++b) {
        const uint8_t * wb = panel + size_t(b) * kBlockBytes;
        int32x4_t sum[MR][4];
        for (int i = 0; i < MR; ++i) {
            for (int v = 0; v < 4; ++v) sum[i][v] = vdupq_n_s32(0);
        }
        for (int64_t g4 = 0; g4 < kGroups; g4 += 4) {  // 4 groups: one 16-byte load of each row's activations
            int8x16_t a[MR];
            for (int i = 0; i < MR; ++i) a[i] = vld1q_s8(qa[i] + b * kBlock + g4 * 4);
#define MCV_GROUP(L)                                                                                                   \
    {                                                                                                                  \
        const int8_t * wg = reinterpret_cast<const int8_t *>(wb + ((g4 + L) * kVectors + c) * 64);                     \
        const int8x16_t w0 = vld1q_s8(wg), w1 = vld1q_s8(wg + 16), w2 = vld1q_s8(wg + 32), w3 = vld1q_s8(wg + 48);     \
        for (int i = 0; i < MR; ++i) {                                                                                 \
            sum[i][0] = vdotq_laneq_s32(sum[i][0], w0, a[i], L);                                                       \
            sum[i][1] = vdotq_laneq_s32(sum[i][1], w1, a[i], L);                                                       \
            sum[i][2] = vdotq_laneq_s32(sum[i][2], w2, a[i], L);                                                       \
            sum[i][3] = vdotq_laneq_s32(sum[i][3], w3, a[i], L);                                                       \
        }                                                                                                              \
    }
            MCV_GROUP(0)
            MCV_GROUP(1)
            MCV_GROUP(2)
            MCV_GROUP(3)
#undef MCV_GROUP
        }
        const auto * sw = reinterpret_cast<const float *>(wb + kBlockInts) + c * 16;
        for (int v = 0; v < 4; ++v) {
            const float32x4_t s = vld1q_f32(sw + v * 4);
            for (int i = 0; i < MR; ++i) {
                const float32x4_t scale = vmulq_f32(s, vdupq_n_f32(sa[i][b]));
                vst1q_f32(acc[i] + v * 4, vfmaq_f32(vld1q_f32(acc[i] + v * 4), vcvtq_f32_s32(sum[i][v]), scale));
            }
        }
    }
    const int64_t left = std::clamp<int64_t>(cols - c * 16, 0, 16);
    for (int i = 0; i < MR; ++i) {
        if (bias) {
            for (int64_t j = 0; j < left; ++j) acc[i][j] += bias[c * 16 + j];
        }
        std::memcpy(out + i * ldo + c * 16, acc[i], size_t(left) * sizeof(float));
    }
}

// The I8MM kernel (SMMLA, armv8.6-a's int8 matrix multiply: Apple M2 and later, Graviton 3 and 4, Cortex-A710 /
// X2 and later): one instruction multiplies a 2 x 8 block of activations (two rows, 8 inputs) by an 8 x 2 block of
// weights (two outputs), 32 products into a 2 x 2 int32 tile, where SDOT does 16 products. Its panels hold the same
// integers as the others' in the order SMMLA reads them (PackedWeight::put_block): per 32-block, four chunks of 8
// inputs, each 24 pairs of outputs x 8 inputs (16 bytes). Rows go in pairs (an odd last row is paired with itself
// and the copy dropped); 16 outputs per call: 2 row pairs x 8 output pairs = 16 int32 tiles in registers. The
// block sums are exact and the float steps the other kernels', so the numbers are theirs.
template <int MR>
I8MM_TARGET void tile16_i8mm(const uint8_t * act, const ActLayout & lay, const uint8_t * panel, int64_t c, float * out,
                             int64_t ldo, int64_t cols, const float * bias) {
    constexpr int kPairs = (MR + 1) / 2;  // row pairs
    float acc[MR][16] = {};
    const int8_t * qa[2 * kPairs];
    const float * sa[MR];
    for (int i = 0; i < 2 * kPairs; ++i) {
        qa[i] = reinterpret_cast<const int8_t *>(act + std::min(i, MR - 1) * lay.stride);  // (an odd row: itself)
    }
    for (int i = 0; i < MR; ++i) sa[i] = reinterpret_cast<const float *>(act + i * lay.stride + lay.scales());
    for (int64_t b = 0; b < lay.blocks; ++b) {
        const int8_t * wb = reinterpret_cast<const int8_t *>(panel + size_t(b) * kBlockBytes);
        int32x4_t sum[kPairs][8];
        for (int rp = 0; rp < kPairs; ++rp) {
            for (int cp = 0; cp < 8; ++cp) sum[rp][cp] = vdupq_n_s32(0);
        }
        for (int64_t kc = 0; kc < kBlock / 8; ++kc) {
            int8x16_t a[kPairs];
            for (int rp = 0; rp < kPairs; ++rp) {
                a[rp] = vcombine_s8(vld1_s8(qa[2 * rp] + b * kBlock + kc * 8),
                                    vld1_s8(qa[2 * rp + 1] + b * kBlock + kc * 8));
            }
            const int8_t * wc = wb + (kc * kPanel / 2 + c * 8) * 16;
            for (int cp = 0; cp < 8; ++cp) {
                const int8x16_t w = vld1q_s8(wc + cp * 16);
                for (int rp = 0; rp < kPairs; ++rp) sum[rp][cp] = vmmlaq_s32(sum[rp][cp], a[rp], w);
            }
        }
        const auto * sw = reinterpret_cast<const float *>(wb + kBlockInts) + c * 16;
        for (int v = 0; v < 4; ++v) {  // outputs 4v .. 4v + 3: tiles 2v and 2v + 1, each [r0 o0, r0 o1, r1 o0, r1 o1]
            const float32x4_t s = vld1q_f32(sw + v * 4);
            for (int rp = 0; rp < kPairs; ++rp) {
                const int64x2_t t0 = vreinterpretq_s64_s32(sum[rp][2 * v]),
                                t1 = vreinterpretq_s64_s32(sum[rp][2 * v + 1]);
                const int32x4_t rows[2] = {vreinterpretq_s32_s64(vzip1q_s64(t0, t1)),
                                           vreinterpretq_s32_s64(vzip2q_s64(t0, t1))};
                for (int h = 0; h < 2 && 2 * rp + h < MR; ++h) {
                    const int i = 2 * rp + h;
                    const float32x4_t scale = vmulq_f32(s, vdupq_n_f32(sa[i][b]));
                    vst1q_f32(acc[i] + v * 4, vfmaq_f32(vld1q_f32(acc[i] + v * 4), vcvtq_f32_s32(rows[h]), scale));
                }
            }
        }
    }
    const int64_t left = std::clamp<int64_t>(cols - c * 16, 0, 16);
    for (int i = 0; i < MR; ++i) {
        if (bias) {
            for (int64_t j = 0; j < left; ++j) acc[i][j] += bias[c * 16 + j];
        }
        std::memcpy(out + i * ldo + c * 16, acc[i], size_t(left) * sizeof(float));
    }
}

}  // namespace

void tile_rows_neon(int rows, const uint8_t * act, const ActLayout & lay, const uint8_t * panel, float * out,
                    int64_t ldo, int64_t cols, const float * bias) {
    each_tile16(rows, cols, [&](auto mr, int64_t c) { tile16<mr>(act, lay, panel, c, out, ldo, cols, bias); });
}

void tile_rows_i8mm(int rows, const uint8_t * act, const ActLayout & lay, const uint8_t * panel, float * out,
                    int64_t ldo, int64_t cols, const float * bias) {
    each_tile16(rows, cols, [&](auto mr, int64_t c) { tile16_i8mm<mr>(act, lay, panel, c, out, ldo, cols, bias); });
}

I8MM_TARGET double smmla_chains(int64_t iters) {
    constexpr int kChains = 8;
    int32x4_t acc[kChains];
    for (int i = 0; i < kChains; ++i) acc[i] = vdupq_n_s32(i);
    int8x16_t a = vdupq_n_s8(3);
    const int8x16_t b = vdupq_n_s8(5);
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t it = 0; it < iters; ++it) {
        for (int i = 0; i < kChains; ++i) acc[i] = vmmlaq_s32(acc[i], a, b);
        __asm__ volatile("" : "+w"(a));  // keeps the loop from being folded
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    int32x4_t total = acc[0];
    for (int i = 1; i < kChains; ++i) total = vaddq_s32(total, acc[i]);
    volatile int sink = vaddvq_s32(total);
    (void)sink;
    return double(iters) * kChains * 32 * 2 / s / 1e9;
}

DOTPROD_TARGET double sdot_chains(int64_t iters) {
    constexpr int kChains = 8;
    int32x4_t acc[kChains];
    for (int i = 0; i < kChains; ++i) acc[i] = vdupq_n_s32(i);
    int8x16_t a = vdupq_n_s8(3);
    const int8x16_t b = vdupq_n_s8(5);
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t it = 0; it < iters; ++it) {
        for (int i = 0; i < kChains; ++i) acc[i] = vdotq_s32(acc[i], a, b);
        __asm__ volatile("" : "+w"(a));  // keeps the loop from being folded
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    int32x4_t total = acc[0];
    for (int i = 1; i < kChains; ++i) total = vaddq_s32(total, acc[i]);
    volatile int sink = vaddvq_s32(total);
    (void)sink;
    return double(iters) * kChains * 16 * 2 / s / 1e9;
}

}  // namespace mcv::int8

#endif  // MINICPMV_NEON
