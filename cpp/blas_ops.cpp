#include "blas_ops.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <vector>

#ifdef MINICPMV_BLAS
#include <cblas.h>
#endif

namespace mcv {

#ifdef MINICPMV_BLAS
namespace {

// scipy-openblas32 prefixes every symbol with scipy_
inline void sgemm(bool trans_b, int m, int n, int k, float alpha, const float * a, int lda, const float * b, int ldb,
                  float * c, int ldc) {
    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b,
                      ldb, 0.0f, c, ldc);
}

void single_threaded_blas() {
    static std::once_flag once;
    std::call_once(once, [] { scipy_openblas_set_num_threads(1); });  // ggml's threads do the splitting
}

// rows [lo, hi) of w as f32 (a view when w is f32 already; any type ggml can dequantize otherwise)
const float * rows_f32(const ggml_tensor * w, int64_t lo, int64_t hi, std::vector<float> & scratch) {
    const int64_t k = w->ne[0];
    const char * src = static_cast<const char *>(w->data) + lo * w->nb[1];
    if (w->type == GGML_TYPE_F32) return reinterpret_cast<const float *>(src);
    scratch.resize(size_t((hi - lo) * k));
    const auto * traits = ggml_get_type_traits(w->type);
    for (int64_t r = 0; r < hi - lo; ++r) traits->to_float(src + r * w->nb[1], scratch.data() + r * k, k);
    return scratch.data();
}

// dst = w x: each thread takes a block of output features (rows of w), 16-aligned
void linear_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * w = dst->src[0];
    const ggml_tensor * x = dst->src[1];
    const int64_t k = w->ne[0], m = w->ne[1], n = ggml_nrows(x);
    const int64_t per = (m + nth - 1) / nth;
    const int64_t lo = std::min(m, ((per * ith) + 15) / 16 * 16), hi = std::min(m, ((per * (ith + 1)) + 15) / 16 * 16);
    if (lo >= hi) return;
    single_threaded_blas();
    thread_local std::vector<float> scratch;
    const float * wf = rows_f32(w, lo, hi, scratch);
    sgemm(true, int(n), int(hi - lo), int(k), 1.0f, static_cast<const float *>(x->data), int(k), wf, int(k),
          static_cast<float *>(dst->data) + lo, int(m));
}

// e^x for x <= 0 (softmax after subtracting the row max), about 1 ulp, written so the compiler vectorises it:
// x = n ln2 + r with |r| <= ln2 / 2, e^r by a degree-6 polynomial, 2^n by building the exponent bits.
inline float exp_nonpositive(float x) {
    x = std::max(x, -87.0f);
    const float n = std::nearbyint(x * 1.44269504088896341f);
    const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723212e-6f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = (int32_t(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}

void softmax_rows(float * s, int64_t rows, int64_t cols) {
    for (int64_t i = 0; i < rows; ++i) {
        float * row = s + i * cols;
        float mx = row[0];
        for (int64_t j = 1; j < cols; ++j) mx = std::max(mx, row[j]);
        float sum = 0.0f;
        for (int64_t j = 0; j < cols; ++j) {
            row[j] = exp_nonpositive(row[j] - mx);
            sum += row[j];
        }
        const float inv = 1.0f / sum;
        for (int64_t j = 0; j < cols; ++j) row[j] *= inv;
    }
}

// one (head, batch) pair at a time: S = q k^T / sqrt(d_head); softmax rows; out = S v
void attention_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * q = dst->src[0];  // [dh, H, n_q, B or 1]
    const ggml_tensor * k = dst->src[1];  // [dh, H, n_kv, B]
    const ggml_tensor * v = dst->src[2];
    const int64_t dh = q->ne[0], n_head = q->ne[1], dim = dh * n_head, n_q = q->ne[2], n_kv = k->ne[2];
    const int64_t batch = k->ne[3];
    const float scale = 1.0f / std::sqrt(float(dh));
    single_threaded_blas();
    thread_local std::vector<float> scores;
    scores.resize(size_t(n_q * n_kv));
    for (int64_t job = ith; job < n_head * batch; job += nth) {
        const int64_t h = job % n_head, b = job / n_head;
        const float * qh = static_cast<const float *>(q->data) + (q->ne[3] == 1 ? 0 : b * n_q * dim) + h * dh;
        const float * kh = static_cast<const float *>(k->data) + b * n_kv * dim + h * dh;
        const float * vh = static_cast<const float *>(v->data) + b * n_kv * dim + h * dh;
        float * out = static_cast<float *>(dst->data) + b * n_q * dim + h * dh;
        sgemm(true, int(n_q), int(n_kv), int(dh), scale, qh, int(dim), kh, int(dim), scores.data(), int(n_kv));
        softmax_rows(scores.data(), n_q, n_kv);
        sgemm(false, int(n_q), int(dh), int(n_kv), 1.0f, scores.data(), int(n_kv), vh, int(dim), out, int(dim));
    }
}

}  // namespace

bool blas_available() { return true; }

bool blas_supports(const ggml_tensor * w) {
    return ggml_is_contiguous(w) && (w->type == GGML_TYPE_F32 || ggml_get_type_traits(w->type)->to_float);
}

ggml_tensor * blas_linear(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w) {
    if (!ggml_is_contiguous(x)) x = ggml_cont(ctx, x);
    ggml_tensor * args[2] = {w, x};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], x->ne[1], x->ne[2], x->ne[3], args, 2, linear_op,
                          GGML_N_TASKS_MAX, nullptr);
}

ggml_tensor * blas_attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v) {
    if (!ggml_is_contiguous(q)) q = ggml_cont(ctx, q);
    if (!ggml_is_contiguous(k)) k = ggml_cont(ctx, k);
    if (!ggml_is_contiguous(v)) v = ggml_cont(ctx, v);
    ggml_tensor * args[3] = {q, k, v};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, q->ne[0] * q->ne[1], q->ne[2], k->ne[3], 1, args, 3, attention_op,
                          GGML_N_TASKS_MAX, nullptr);
}

#else

bool blas_available() { return false; }
bool blas_supports(const ggml_tensor *) { return false; }
ggml_tensor * blas_linear(ggml_context *, ggml_tensor *, ggml_tensor *) { return nullptr; }
ggml_tensor * blas_attention(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *) { return nullptr; }

#endif

}  // namespace mcv
