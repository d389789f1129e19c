#include "kernels/int8_gemm.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/int8_layout.h"
#include "kernels/simd_math.h"
#include "runtime/parallel.h"

#ifdef MINICPMV_X86
#define MINICPMV_VNNI 1
#define MINICPMV_INT8 1
#include <immintrin.h>
#define VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#endif
#ifdef MINICPMV_NEON
#define MINICPMV_INT8 1
#endif

namespace mcv {
namespace {

using namespace int8;  // NOLINT: the shared layout (int8_layout.h)

// q = round(x / d), d = amax / 127, for one block of 32 (q8_0's rule, the scale kept in f32). Returns d.
float quantize_block(const float * x, int8_t * q) {
    float amax = 0.0f;
    for (int64_t j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int64_t j = 0; j < kBlock; ++j) {
        const float v = std::nearbyint(x[j] * id);
        q[j] = v >= -127.0f && v <= 127.0f ? int8_t(v) : 0;  // (NaN / inf weights: 0, never an undefined cast)
    }
    return d;
}

// One q8_0 or q4_0 block -> its 32 integers and its scale. q8_0: a half scale, then 32 int8; q4_0: a half scale,
// then 16 bytes of 4-bit values - 8 (low nibbles are the block's first 16, high nibbles its last 16).
float unpack_block(ggml_type type, const uint8_t * blk, int8_t * q) {
    ggml_fp16_t h;
    std::memcpy(&h, blk, sizeof(h));
    if (type == GGML_TYPE_Q8_0) {
        std::memcpy(q, blk + 2, kBlock);
    } else {
        for (int j = 0; j < kBlock / 2; ++j) {
            q[j] = int8_t((blk[2 + j] & 0x0f) - 8);
            q[j + kBlock / 2] = int8_t((blk[2 + j] >> 4) - 8);
        }
    }
    return ggml_fp16_to_fp32(h);
}

#ifdef MINICPMV_VNNI

using namespace simd::gelu;  // NOLINT: its constants

// GELU fused into the quantization of the next product's activations (its two forms: simd_math.h)
VNNI_TARGET inline __m512 gelu_512(__m512 x) {
    const __m512 t =
        _mm512_mul_ps(x, _mm512_fmadd_ps(_mm512_mul_ps(x, x), _mm512_set1_ps(kGeluA), _mm512_set1_ps(kGeluC)));
    const __m512 e = simd::exp2_512(_mm512_mul_ps(t, _mm512_set1_ps(-1.44269504088896341f)));  // e^-t
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

VNNI_TARGET inline __m512 gelu_erf_512(__m512 x) {
    const __m512 z = _mm512_mul_ps(_mm512_abs_ps(x), _mm512_set1_ps(0.70710678118654752f));
    const __m512 t =
        _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(z, _mm512_set1_ps(kErfP), _mm512_set1_ps(1.0f)));
    __m512 p = _mm512_fmadd_ps(t, _mm512_set1_ps(kErfA5), _mm512_set1_ps(kErfA4));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(kErfA3));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(kErfA2));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(kErfA1));
    const __m512 e = simd::exp2_512(_mm512_mul_ps(_mm512_mul_ps(z, z), _mm512_set1_ps(-kLog2e)));  // e^(-z^2)
    const __m512 q = _mm512_mul_ps(_mm512_mul_ps(p, t), e);
    const __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
    const __m512 s = _mm512_mask_blend_ps(neg, _mm512_sub_ps(_mm512_set1_ps(2.0f), q), q);
    return _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.5f)), s);
}

template <InputAct A> VNNI_TARGET inline __m512 act_512(__m512 x) {
    if constexpr (A == InputAct::gelu_tanh) return gelu_512(x);
    if constexpr (A == InputAct::gelu_erf) return gelu_erf_512(x);
    return x;
}

template <InputAct A> VNNI_TARGET void quantize_row(const float * x, int64_t k, uint8_t * row, const ActLayout & lay) {
    auto * q = reinterpret_cast<int8_t *>(row);
    auto * d = reinterpret_cast<float *>(row + lay.scales());
    auto * corr = reinterpret_cast<int32_t *>(row + lay.corrections());
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (int64_t b = 0; b < lay.blocks; ++b) {
        const int64_t j0 = b * kBlock, n = std::min<int64_t>(kBlock, k - j0);
        const __mmask16 m0 = n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1);
        const __mmask16 m1 = n >= 32 ? __mmask16(0xffff) : n > 16 ? __mmask16((1u << (n - 16)) - 1) : __mmask16(0);
        __m512 v0 = _mm512_maskz_loadu_ps(m0, x + j0);
        __m512 v1 = _mm512_maskz_loadu_ps(m1, x + j0 + 16);
        v0 = act_512<A>(v0);  // (gelu(0) = 0: the padding stays zero)
        v1 = act_512<A>(v1);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_andnot_ps(sign, v0), _mm512_andnot_ps(sign, v1)));
        const float scale = amax / 127.0f;
        const __m512 inv = _mm512_set1_ps(scale != 0.0f ? 1.0f / scale : 0.0f);
        const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, inv));  // round to nearest (even)
        const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, inv));
        _mm_storeu_si128(reinterpret_cast<__m128i *>(q + j0), _mm512_cvtsepi32_epi8(q0));
        _mm_storeu_si128(reinterpret_cast<__m128i *>(q + j0 + 16), _mm512_cvtsepi32_epi8(q1));
        d[b] = scale;
        corr[b] = -128 * _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    }
}

// out[i][0:48] = sum over blocks of scale_w * scale_a[i] * (int32 dot of the block), for MR activation rows;
// `cols` of the 48 outputs are stored (the panel's padding is not)
template <int MR>
VNNI_TARGET void tile(const uint8_t * act, const ActLayout & lay, const uint8_t * panel, float * out, int64_t ldo,
                      int64_t cols, const float * bias) {
    __m512 acc[MR][kVectors];
    for (int i = 0; i < MR; ++i) {
        for (int v = 0; v < kVectors; ++v) acc[i][v] = _mm512_setzero_ps();
    }
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
        __m512i sum[MR][kVectors];
        for (int i = 0; i < MR; ++i) {
            const __m512i c = _mm512_set1_epi32(ca[i][b]);  // starts at the correction: no separate subtract
            for (int v = 0; v < kVectors; ++v) sum[i][v] = c;
        }
#pragma GCC unroll 8
        for (int64_t g = 0; g < kGroups; ++g) {
            __m512i w[kVectors];
            for (int v = 0; v < kVectors; ++v) w[v] = _mm512_load_si512(wb + (g * kVectors + v) * 64);
            for (int i = 0; i < MR; ++i) {
                int32_t four;
                std::memcpy(&four, qa[i] + b * kBlock + g * 4, 4);
                const __m512i a = _mm512_set1_epi32(four);
                for (int v = 0; v < kVectors; ++v) sum[i][v] = _mm512_dpbusd_epi32(sum[i][v], w[v], a);
            }
        }
        const auto * sw = reinterpret_cast<const float *>(wb + kBlockInts);
        for (int v = 0; v < kVectors; ++v) {
            const __m512 s = _mm512_load_ps(sw + v * 16);
            for (int i = 0; i < MR; ++i) {
                const __m512 scale = _mm512_mul_ps(s, _mm512_set1_ps(sa[i][b]));
                acc[i][v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[i][v]), scale, acc[i][v]);
            }
        }
    }
    for (int v = 0; v < kVectors; ++v) {
        const int64_t left = std::clamp<int64_t>(cols - v * 16, 0, 16);
        const __mmask16 m = left == 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
        if (bias) {  // + the bias as ggml_add would (same sum)
            const __m512 b = _mm512_maskz_loadu_ps(m, bias + v * 16);
            for (int i = 0; i < MR; ++i) acc[i][v] = _mm512_add_ps(acc[i][v], b);
        }
        for (int i = 0; i < MR; ++i) _mm512_mask_storeu_ps(out + i * ldo + v * 16, m, acc[i][v]);
    }
}

VNNI_TARGET void tile_rows(int rows, const uint8_t * act, const ActLayout & lay, const uint8_t * panel, float * out,
                           int64_t ldo, int64_t cols, const float * bias) {
    with_rows(rows, [&](auto mr) { tile<mr>(act, lay, panel, out, ldo, cols, bias); });
}

VNNI_TARGET double dot_chains(int64_t iters) {
    constexpr int kChains = 12;  // enough independent accumulators to cover the instruction's latency
    __m512i acc[kChains];
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_epi32(i);
    __m512i a = _mm512_set1_epi8(3);
    const __m512i b = _mm512_set1_epi8(5);
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t it = 0; it < iters; ++it) {
        for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
        __asm__ volatile("" : "+v"(a));  // keeps the loop from being folded
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    __m512i total = acc[0];
    for (int i = 1; i < kChains; ++i) total = _mm512_add_epi32(total, acc[i]);
    volatile int sink = _mm512_reduce_add_epi32(total);
    (void)sink;
    return double(iters) * kChains * 64 * 2 / s / 1e9;
}

#endif  // MINICPMV_VNNI

#ifdef MINICPMV_INT8
// y = (x - mean) / sqrt(var + eps) * w + b over a row of k (b may be null). The sums run in 16 lanes, each over
// the inputs j = lane mod 16, added lane by lane at the end: one order whatever the vector width, so every kernel
// quantizes the same floats.
void norm_row(const float * x, int64_t k, const float * w, const float * b, float eps, float * y) {
    constexpr int kLanes = 16;
    float part[kLanes] = {};
    const int64_t whole = k / kLanes * kLanes;
    for (int64_t j = 0; j < whole; j += kLanes) {
        for (int l = 0; l < kLanes; ++l) part[l] += x[j + l];
    }
    for (int64_t j = whole; j < k; ++j) part[j - whole] += x[j];
    float sum = 0.0f;
    for (float p : part) sum += p;
    const float mean = sum / float(k);
    std::fill(part, part + kLanes, 0.0f);
    for (int64_t j = 0; j < whole; j += kLanes) {
        for (int l = 0; l < kLanes; ++l) part[l] += (x[j + l] - mean) * (x[j + l] - mean);
    }
    for (int64_t j = whole; j < k; ++j) part[j - whole] += (x[j] - mean) * (x[j] - mean);
    float var = 0.0f;
    for (float p : part) var += p;
    const float rstd = 1.0f / std::sqrt(var / float(k) + eps);
    for (int64_t j = 0; j < k; ++j) y[j] = (x[j] - mean) * rstd * w[j] + (b ? b[j] : 0.0f);
}

// dst [stride, M + 1] rows of kernel I = src0 [k, M] f32 (of A(src0), or of A(LayerNorm(src0)) with src1, src2 its
// weight and bias where userdata points to its eps), rows split over threads; the last row holds the products' work
// counters (WorkCounters), zeroed here
template <InputAct A, Int8Isa I> void quantize_op(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const auto * eps = static_cast<const float *>(userdata);
    const ggml_tensor * x = dst->src[0];
    const int64_t k = x->ne[0], m = ggml_nrows(x);
    const ActLayout lay(k, I);
    if (ith == 0) WorkCounters::at(dst->data, lay.counters(m)).clear();
    std::vector<float> normed(eps ? size_t(k) : 0);
    const float * nw = eps ? static_cast<const float *>(dst->src[1]->data) : nullptr;
    const float * nb = eps && dst->src[2] ? static_cast<const float *>(dst->src[2]->data) : nullptr;
    for (int64_t r = ith; r < m; r += nth) {
        const float * src = static_cast<const float *>(x->data) + r * k;
        if (eps) {
            norm_row(src, k, nw, nb, *eps, normed.data());
            src = normed.data();
        }
        uint8_t * row = static_cast<uint8_t *>(dst->data) + r * lay.stride;
#ifdef MINICPMV_VNNI
        if constexpr (I == Int8Isa::vnni) quantize_row<A>(src, k, row, lay);
        if constexpr (I == Int8Isa::avx2 || I == Int8Isa::avxvnni) quantize_row_avx2(src, k, row, lay, A);
#endif
#ifdef MINICPMV_NEON
        if constexpr (I == Int8Isa::neon || I == Int8Isa::i8mm) quantize_row_neon(src, k, row, lay, A);
#endif
    }
}

template <InputAct A> ggml_custom_op_t quantize_op_for(Int8Isa isa) {
    switch (isa) {
        case Int8Isa::vnni: return quantize_op<A, Int8Isa::vnni>;
        case Int8Isa::avxvnni: return quantize_op<A, Int8Isa::avxvnni>;
        case Int8Isa::avx2: return quantize_op<A, Int8Isa::avx2>;
        case Int8Isa::i8mm: return quantize_op<A, Int8Isa::i8mm>;
        default: return quantize_op<A, Int8Isa::neon>;
    }
}

// dst [n, M] f32 = w (userdata) x the quantized rows (src0) (+ src1, an f32 bias, where given); work = (chunk of
// rows, panel) pairs in chunk order, each thread taking the next one as it becomes free (WorkCounters, after the
// rows): a slower core (a laptop's efficiency core, one shared with another program) takes fewer instead of
// holding the others up
void gemm_op(ggml_tensor * dst, int ith, int nth, void * userdata) {
    (void)ith;
    const auto & w = *static_cast<const PackedWeight *>(userdata);
    const Int8Isa isa = w.isa();
    const ggml_tensor * a = dst->src[0];
    const ActLayout lay(w.k(), isa);
    const int64_t m = a->ne[1] - 1, panels = w.panels(), chunks = (m + kChunkRows - 1) / kChunkRows;
    const int64_t units = chunks * panels;
    const auto * act = static_cast<const uint8_t *>(a->data);
    WorkCounters & work = WorkCounters::at(a->data, lay.counters(m));
#ifdef MINICPMV_VNNI
    const bool vex = isa == Int8Isa::avxvnni && avx_vnni_vex();
#endif
    const float * bias = dst->src[1] ? static_cast<const float *>(dst->src[1]->data) : nullptr;
    auto * out = static_cast<float *>(dst->data);
    for (int64_t u; (u = work.take()) < units;) {
        const int64_t c = u / panels, p = u % panels;
        const int64_t col = p * kPanel, cols = std::min(kPanel, w.n() - col);
        const float * b = bias ? bias + col : nullptr;
        const int64_t r1 = std::min(m, (c + 1) * kChunkRows);
        for (int64_t r = c * kChunkRows; r < r1; r += kTileRows) {
            const int rows = int(std::min<int64_t>(kTileRows, r1 - r));
            const uint8_t * ar = act + r * lay.stride;
            float * o = out + r * w.n() + col;
#ifdef MINICPMV_VNNI
            if (isa == Int8Isa::vnni) tile_rows(rows, ar, lay, w.panel(p), o, w.n(), cols, b);
            if (isa == Int8Isa::avx2) tile_rows_avx2(rows, ar, lay, w.panel(p), o, w.n(), cols, b);
            if (isa == Int8Isa::avxvnni) tile_rows_vnni256(rows, ar, lay, w.panel(p), o, w.n(), cols, b, vex);
#endif
#ifdef MINICPMV_NEON
            if (isa == Int8Isa::neon) tile_rows_neon(rows, ar, lay, w.panel(p), o, w.n(), cols, b);
            if (isa == Int8Isa::i8mm) tile_rows_i8mm(rows, ar, lay, w.panel(p), o, w.n(), cols, b);
#endif
        }
    }
    work.leave(nth);
}

#endif  // MINICPMV_INT8

}  // namespace

double int8_dot_peak_gops(int n_threads, Int8Isa isa) {
#ifdef MINICPMV_INT8
    if (isa == Int8Isa::none || !int8_isa_available(isa) || n_threads < 1) return 0.0;
#ifdef MINICPMV_VNNI
    double (*chains)(int64_t) = isa == Int8Isa::vnni ? dot_chains
        : isa == Int8Isa::avxvnni                    ? dpbusd256_chains
                                                     : madd_chains;
#else
    double (*chains)(int64_t) = isa == Int8Isa::i8mm ? smmla_chains : sdot_chains;
#endif
    std::vector<double> rates(size_t(n_threads), 0.0);
    parallel_for(n_threads, n_threads, [&](int lo, int hi) {
        for (int i = lo; i < hi; ++i) {
            chains(2000000);  // warm-up: clocks and the unit's power state
            rates[size_t(i)] = chains(20000000);
        }
    });
    double total = 0.0;
    for (double r : rates) total += r;
    return total;
#else
    (void)n_threads;
    (void)isa;
    return 0.0;
#endif
}

const char * int8_isa_name(Int8Isa isa) {
    switch (isa) {
        case Int8Isa::vnni: return "vnni";
        case Int8Isa::avx2: return "avx2";
        case Int8Isa::avxvnni: return "avxvnni";
        case Int8Isa::neon: return "neon";
        case Int8Isa::i8mm: return "i8mm";
        default: return "none";
    }
}

Int8Isa int8_isa_named(const std::string & name) {
    for (Int8Isa isa : {Int8Isa::vnni, Int8Isa::avxvnni, Int8Isa::avx2, Int8Isa::i8mm, Int8Isa::neon}) {
        if (name == int8_isa_name(isa)) return isa;
    }
    return Int8Isa::none;
}

const char * int8_isa_words(Int8Isa isa) {
    return isa == Int8Isa::vnni   ? "AVX512-VNNI"
        : isa == Int8Isa::avxvnni ? "AVX-VNNI"
        : isa == Int8Isa::avx2    ? "AVX2"
        : isa == Int8Isa::neon    ? "NEON SDOT"
        : isa == Int8Isa::i8mm    ? "NEON I8MM"
                                  : "none";
}

bool int8_isa_available(Int8Isa isa) {
#ifdef MINICPMV_VNNI
    __builtin_cpu_init();
    if (isa == Int8Isa::vnni) {
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
            __builtin_cpu_supports("avx512vnni");
    }
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (isa == Int8Isa::avxvnni) {  // (VEX, or the same instruction through AVX512-VL)
        return avx2 && (avx_vnni_vex() || (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl")));
    }
    return isa == Int8Isa::avx2 && avx2;
#elif defined(MINICPMV_NEON)
    if (isa == Int8Isa::i8mm) return neon_i8mm_available();
    return isa == Int8Isa::neon && neon_dot_available();
#else
    (void)isa;
    return false;
#endif
}

Int8Isa int8_best_isa() {
    if (int8_isa_available(Int8Isa::vnni)) return Int8Isa::vnni;
    if (int8_isa_available(Int8Isa::avxvnni)) return Int8Isa::avxvnni;
    if (int8_isa_available(Int8Isa::avx2)) return Int8Isa::avx2;
    if (int8_isa_available(Int8Isa::i8mm)) return Int8Isa::i8mm;
    if (int8_isa_available(Int8Isa::neon)) return Int8Isa::neon;
    return Int8Isa::none;
}

bool int8_gemm_available() { return int8_best_isa() != Int8Isa::none; }

PackedWeight::PackedWeight(const ggml_tensor * w, Int8Isa isa) : k_(w->ne[0]), n_(w->ne[1]), isa_(isa) {
    if (isa == Int8Isa::none) throw std::invalid_argument("PackedWeight: no int8 kernel named");
    if (!ggml_is_contiguous(w) || ggml_n_dims(w) > 2 || !w->data) {
        throw std::invalid_argument(std::string("cannot repack ") + w->name + ": not a contiguous host matrix");
    }
    const auto * traits = ggml_get_type_traits(w->type);
    if (w->type != GGML_TYPE_F32 && !traits->to_float) {
        throw std::invalid_argument(std::string("cannot repack ") + w->name + ": type " + ggml_type_name(w->type));
    }
    k_pad_ = round_up(k_, kBlock);
    n_pad_ = round_up(n_, kPanel);
    bytes_ = size_t(panels()) * panel_bytes();
    data_.reset(static_cast<uint8_t *>(std::aligned_alloc(64, bytes_)));
    if (!data_) throw std::bad_alloc();
    std::memset(data_.get(), 0, bytes_);  // padding: zero scales, so it adds nothing

    // q8_0 and q4_0 are integers times one scale per 32: taken as they are. Other types are dequantized and
    // quantized per 32-block (the row zero-padded to whole blocks).
    exact_ = (w->type == GGML_TYPE_Q8_0 && ggml_type_size(w->type) == sizeof(ggml_fp16_t) + kBlock) ||
        (w->type == GGML_TYPE_Q4_0 && ggml_type_size(w->type) == sizeof(ggml_fp16_t) + kBlock / 2);
    const size_t bsize = ggml_type_size(w->type);
    std::vector<float> row(exact_ ? 0 : size_t(k_pad_), 0.0f);  // past k: zeros, so every block is whole
    int8_t q[kBlock];
    for (int64_t r = 0; r < n_; ++r) {
        const uint8_t * line = static_cast<const uint8_t *>(w->data) + size_t(r) * w->nb[1];
        if (!exact_ && w->type == GGML_TYPE_F32) {
            std::memcpy(row.data(), line, size_t(k_) * sizeof(float));
        } else if (!exact_) {
            traits->to_float(line, row.data(), k_);
        }
        for (int64_t b = 0; b < blocks(); ++b) {
            const float d = exact_ ? unpack_block(w->type, line + size_t(b) * bsize, q)
                                   : quantize_block(row.data() + b * kBlock, q);
            put_block(r, b, q, d);
        }
    }
}

void PackedWeight::put_block(int64_t row, int64_t block, const int8_t * q, float scale) {
    const int64_t r = row % kPanel, v = r / 16, lane = r % 16;
    uint8_t * dst = data_.get() + size_t(row / kPanel) * panel_bytes() + size_t(block) * kBlockBytes;
    if (isa_ == Int8Isa::i8mm) {  // SMMLA's order: 4 chunks of 8 inputs, each 24 output pairs x 8 inputs
        for (int64_t j = 0; j < kBlock; ++j)
            dst[((j / 8) * (kPanel / 2) + r / 2) * 16 + (r % 2) * 8 + j % 8] = uint8_t(q[j]);
    } else if (isa_ == Int8Isa::avx2) {  // VPMADDWD's order: per pair of inputs, 8 outputs x 2 inputs (16 bytes)
        for (int64_t j = 0; j < kBlock; ++j)
            dst[((j / 2) * (kPanel / 8) + r / 8) * 16 + (r % 8) * 2 + j % 2] = uint8_t(q[j]);
    } else {
        for (int64_t g = 0; g < kGroups; ++g) {
            for (int64_t j = 0; j < 4; ++j) {  // VNNI, AVX-VNNI: w + 128 (VPDPBUSD's unsigned operand); NEON: w
                const int w = q[g * 4 + j] + (isa_ == Int8Isa::vnni || isa_ == Int8Isa::avxvnni ? 128 : 0);
                dst[(g * kVectors + v) * 64 + lane * 4 + j] = uint8_t(w & 0xff);
            }
        }
    }
    std::memcpy(dst + kBlockInts + size_t(r) * sizeof(float), &scale, sizeof(float));
}

void PackedWeights::add(const std::vector<const ggml_tensor *> & weights, int n_threads, Int8Isa isa,
                        const std::function<void(const ggml_tensor *)> & packed) {
    std::vector<std::unique_ptr<PackedWeight>> done(weights.size());
    parallel_for(int(weights.size()), n_threads, [&](int lo, int hi) {
        for (int i = lo; i < hi; ++i) {
            done[size_t(i)] = std::make_unique<PackedWeight>(weights[size_t(i)], isa);
            if (packed) packed(weights[size_t(i)]);
        }
    });
    for (size_t i = 0; i < weights.size(); ++i) packed_.emplace(weights[i], std::move(done[i]));
}

size_t PackedWeights::bytes() const {
    size_t total = 0;
    for (const auto & [t, p] : packed_) total += p->bytes();
    return total;
}

bool int8_fusable_bias(const ggml_tensor * b, const PackedWeight & w) {
    return b && b->type == GGML_TYPE_F32 && ggml_is_contiguous(b) && ggml_nelements(b) == w.n();
}

bool int8_fusable_norm(const RowNorm & norm, const PackedWeight & w) {
    auto ok = [&](const ggml_tensor * t) {
        return t->type == GGML_TYPE_F32 && ggml_is_contiguous(t) && ggml_nelements(t) == w.k() && t->data;
    };
    return norm.w && norm.eps && ok(norm.w) && (!norm.b || ok(norm.b));
}

ggml_tensor * int8_quantize(ggml_context * ctx, ggml_tensor * x, const PackedWeight & w, InputAct act,
                            const RowNorm & norm) {
#ifdef MINICPMV_INT8
    if (x->type != GGML_TYPE_F32 || x->ne[0] != w.k()) {
        throw std::invalid_argument("int8_linear: activations must be f32 with " + std::to_string(w.k()) + " rows");
    }
    const bool normed = norm.w != nullptr;
    if (normed && !int8_fusable_norm(norm, w)) {
        throw std::invalid_argument("int8_linear: the LayerNorm is not f32 [" + std::to_string(w.k()) +
                                    "] with an eps");
    }
    if (!ggml_is_contiguous(x)) x = ggml_cont(ctx, x);
    const ActLayout lay(w.k(), w.isa());
    ggml_tensor * args[3] = {x, const_cast<ggml_tensor *>(norm.w), const_cast<ggml_tensor *>(norm.b)};
    const ggml_custom_op_t op = act == InputAct::gelu_tanh ? quantize_op_for<InputAct::gelu_tanh>(w.isa())
        : act == InputAct::gelu_erf                        ? quantize_op_for<InputAct::gelu_erf>(w.isa())
                                                           : quantize_op_for<InputAct::none>(w.isa());
    ggml_tensor * q = ggml_custom_4d(ctx, GGML_TYPE_I8, lay.stride, ggml_nrows(x) + 1, 1, 1, args,
                                     !normed      ? 1
                                         : norm.b ? 3
                                                  : 2,
                                     op, GGML_N_TASKS_MAX, normed ? const_cast<float *>(norm.eps) : nullptr);
    ggml_format_name(q, "quantize %s", x->name);
    return q;
#else
    (void)ctx;
    (void)x;
    (void)w;
    (void)act;
    (void)norm;
    throw std::logic_error("int8_linear: this build has no int8 kernel");
#endif
}

bool int8_shares_quantized(const PackedWeight & a, const PackedWeight & b) {
    return a.k() == b.k() && a.isa() == b.isa();
}

ggml_tensor * int8_product(ggml_context * ctx, ggml_tensor * q, const ggml_tensor * x, const PackedWeight & w,
                           ggml_tensor * bias) {
#ifdef MINICPMV_INT8
    if (q->type != GGML_TYPE_I8 || q->ne[0] != ActLayout(w.k(), w.isa()).stride || q->ne[1] != ggml_nrows(x) + 1 ||
        x->ne[0] != w.k()) {
        throw std::invalid_argument("int8_product: the quantized rows are not " + std::string(x->name) + "'s for " +
                                    std::to_string(w.k()) + " inputs");
    }
    if (bias && !int8_fusable_bias(bias, w)) throw std::invalid_argument("int8_linear: the bias is not f32 [n]");
    ggml_tensor * qa[2] = {q, bias};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, w.n(), x->ne[1], x->ne[2], x->ne[3], qa, bias ? 2 : 1, gemm_op,
                          GGML_N_TASKS_MAX, const_cast<PackedWeight *>(&w));
#else
    (void)ctx;
    (void)q;
    (void)x;
    (void)w;
    (void)bias;
    throw std::logic_error("int8_linear: this build has no int8 kernel");
#endif
}

ggml_tensor * int8_linear(ggml_context * ctx, ggml_tensor * x, const PackedWeight & w, ggml_tensor * bias, InputAct act,
                          const RowNorm & norm) {
    return int8_product(ctx, int8_quantize(ctx, x, w, act, norm), x, w, bias);
}

}  // namespace mcv
