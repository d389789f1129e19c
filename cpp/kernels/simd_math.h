// Vector math the int8 kernels share (int8_gemm.cpp, int8_gemm_avx2.cpp, int8_attention.cpp): 2^x on AVX-512 and
// AVX2 vectors for their fused steps (softmax, GELU): x clamped to [-126, 126], 2^n times a degree-6 polynomial of
// the rest (|r| <= 1/2), about 1e-7 relative; both versions run the same operations in the same order, so they give
// the same bits. And AVX2's horizontal max and sum.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include <cstdint>

namespace mcv::simd {

// GELU's constants, for the 512- and 256-bit forms the kernels fuse into their activation quantization.
// The tanh form (gelu_pytorch_tanh, SigLIP's): x / (1 + e^-t), t = 2 sqrt(2/pi) (x + 0.044715 x^3), e^-t as 2^n
// times a degree-6 polynomial (about 1e-7 relative; ggml_gelu's CPU table: ~1e-3).
// The exact form x/2 (1 + erf(x / sqrt 2)) (timm's nn.GELU): with z = |x| / sqrt 2, erfc(z) = q = t (a1 + t (a2 +
// ... + t a5)) e^(-z^2), t = 1 / (1 + p z) (Abramowitz & Stegun 7.1.26: |error| <= 1.5e-7), and gelu = x/2 q for
// x < 0, x/2 (2 - q) otherwise (no cancellation on either side): within 4.2e-7 of the exact GELU over [-12, 12]
// (checked in numpy, float32 steps), far below the int8 step the result is quantized to.
// Every width runs the same operations in the same order: the same bits.
namespace gelu {
constexpr float kGeluC = 1.5957691216057308f, kGeluA = 0.044715f * 1.5957691216057308f;
constexpr float kErfP = 0.3275911f, kErfA1 = 0.254829592f, kErfA2 = -0.284496736f, kErfA3 = 1.421413741f,
                kErfA4 = -1.453152027f, kErfA5 = 1.061405429f, kLog2e = 1.44269504088896341f;
}  // namespace gelu

__attribute__((target("avx512f"))) inline __m512 exp2_512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-126.0f)), _mm512_set1_ps(126.0f));
    const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_sub_ps(x, n);
    __m512 p = _mm512_set1_ps(1.5403530e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3333558e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(9.6181291e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.5504109e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.24022651f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.69314718f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

__attribute__((target("avx2,fma"))) inline __m256 exp2_256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-126.0f)), _mm256_set1_ps(126.0f));
    const __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 r = _mm256_sub_ps(x, n);
    __m256 p = _mm256_set1_ps(1.5403530e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3333558e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(9.6181291e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.5504109e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.24022651f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.69314718f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

__attribute__((target("avx2"))) inline float hmax_256(__m256 v) {
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
}

__attribute__((target("avx2"))) inline int32_t hsum_256(__m256i v) {
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
    return _mm_cvtsi128_si32(_mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1)));
}

}  // namespace mcv::simd

#endif
