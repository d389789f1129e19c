#include "kernels/blas_ops.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

#ifdef MINICPMV_BLAS
#include <cblas.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#endif

namespace mcv {

#ifdef MINICPMV_BLAS
namespace {

// scipy-openblas32 prefixes every symbol with scipy_
inline void sgemm(bool trans_b, int m, int n, int k, float alpha, const float * a, int lda, const float * b, int ldb,
                  float * c, int ldc) {
    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb,
                      0.0f, c, ldc);
}

void single_threaded_blas() {
    static std::once_flag once;
    std::call_once(once, [] { scipy_openblas_set_num_threads(1); });  // ggml's threads do the splitting
}

// Output features are computed in blocks of this many rows, one sgemm call each, whatever the thread count: OpenBLAS
// picks its kernel by the call's dimensions (small products, under about 100^3 multiply-adds, go to other kernels
// whose sums differ in the last bit), so calls whose shapes followed the thread count would make results follow it.
constexpr int64_t kRowAlign = 64;
constexpr size_t kScoreFloats = size_t(1) << 20;  // one thread's attention score tile: 4 MiB

// rows [lo, hi) of the output features that thread ith of nth computes: about m / nth, whole row blocks
void row_range(int64_t m, int ith, int nth, int64_t & lo, int64_t & hi) {
    const int64_t blocks = (m + kRowAlign - 1) / kRowAlign;
    lo = std::min(m, blocks * ith / nth * kRowAlign);
    hi = std::min(m, blocks * (ith + 1) / nth * kRowAlign);
}

// query rows per attention tile, so that a tile of scores stays within kScoreFloats
int64_t tile_rows(int64_t n_q, int64_t n_kv) {
    return std::max<int64_t>(1, std::min<int64_t>(n_q, int64_t(kScoreFloats) / std::max<int64_t>(n_kv, 1)));
}

// dst = w x: each thread takes a block of output features (rows of w)
void linear_op(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const ggml_tensor * w = dst->src[0];
    const ggml_tensor * x = dst->src[1];
    const int64_t k = w->ne[0], m = w->ne[1], n = ggml_nrows(x);
    int64_t lo = 0, hi = 0;
    row_range(m, ith, nth, lo, hi);
    if (lo >= hi) return;
    single_threaded_blas();
    const char * src = static_cast<const char *>(w->data) + lo * w->nb[1];
    const float * wf = reinterpret_cast<const float *>(src);
    if (w->type != GGML_TYPE_F32) {  // dequantize this thread's rows into its scratch
        float * buf = static_cast<BlasScratch *>(userdata)->get(ith, size_t((hi - lo) * k));
        if (!buf) return;
        const auto * traits = ggml_get_type_traits(w->type);
        for (int64_t r = 0; r < hi - lo; ++r) traits->to_float(src + r * w->nb[1], buf + r * k, k);
        wf = buf;
    }
    for (int64_t r = lo; r < hi; r += kRowAlign) {  // one call per row block (see kRowAlign)
        const int64_t rows = std::min(kRowAlign, hi - r);
        sgemm(true, int(n), int(rows), int(k), 1.0f, static_cast<const float *>(x->data), int(k), wf + (r - lo) * k,
              int(k), static_cast<float *>(dst->data) + r, int(m));
    }
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

// one (head, batch, tile of query rows) at a time: S = q k^T / sqrt(d_head); softmax rows; out = S v
void attention_op(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const ggml_tensor * q = dst->src[0];  // [dh, H, n_q, B or 1]
    const ggml_tensor * k = dst->src[1];  // [dh, H, n_kv, B]
    const ggml_tensor * v = dst->src[2];
    const int64_t dh = q->ne[0], n_head = q->ne[1], dim = dh * n_head, n_q = q->ne[2], n_kv = k->ne[2];
    const int64_t batch = k->ne[3], rows = tile_rows(n_q, n_kv), n_tiles = (n_q + rows - 1) / rows;
    const float scale = 1.0f / std::sqrt(float(dh));
    float * scores = static_cast<BlasScratch *>(userdata)->get(ith, size_t(rows * n_kv));
    if (!scores) return;
    single_threaded_blas();
    for (int64_t job = ith; job < n_head * batch * n_tiles; job += nth) {
        const int64_t h = job % n_head, b = (job / n_head) % batch, t = job / (n_head * batch);
        const int64_t r0 = t * rows, nr = std::min(rows, n_q - r0);
        const float * qh =
            static_cast<const float *>(q->data) + (q->ne[3] == 1 ? 0 : b * n_q * dim) + r0 * dim + h * dh;
        const float * kh = static_cast<const float *>(k->data) + b * n_kv * dim + h * dh;
        const float * vh = static_cast<const float *>(v->data) + b * n_kv * dim + h * dh;
        float * out = static_cast<float *>(dst->data) + b * n_q * dim + r0 * dim + h * dh;
        sgemm(true, int(nr), int(n_kv), int(dh), scale, qh, int(dim), kh, int(dim), scores, int(n_kv));
        softmax_rows(scores, nr, n_kv);
        sgemm(false, int(nr), int(dh), int(n_kv), 1.0f, scores, int(n_kv), vh, int(dim), out, int(dim));
    }
}

}  // namespace

bool blas_available() { return true; }

bool blas_supports(const ggml_tensor * w) {
    return ggml_is_contiguous(w) && (w->type == GGML_TYPE_F32 || ggml_get_type_traits(w->type)->to_float);
}

ggml_tensor * blas_linear(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, BlasScratch & scratch) {
    if (!ggml_is_contiguous(x)) x = ggml_cont(ctx, x);
    if (w->type != GGML_TYPE_F32) {  // the widest row block any thread dequantizes
        const int64_t m = w->ne[1];
        int64_t widest = 0;
        for (int ith = 0, nth = int(scratch.n_threads()); ith < nth; ++ith) {
            int64_t lo = 0, hi = 0;
            row_range(m, ith, nth, lo, hi);
            widest = std::max(widest, hi - lo);
        }
        scratch.need(size_t(widest * w->ne[0]));
    }
    ggml_tensor * args[2] = {w, x};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], x->ne[1], x->ne[2], x->ne[3], args, 2, linear_op,
                          GGML_N_TASKS_MAX, &scratch);
}

ggml_tensor * blas_attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v,
                             BlasScratch & scratch) {
    if (!ggml_is_contiguous(q)) q = ggml_cont(ctx, q);
    if (!ggml_is_contiguous(k)) k = ggml_cont(ctx, k);
    if (!ggml_is_contiguous(v)) v = ggml_cont(ctx, v);
    scratch.need(size_t(tile_rows(q->ne[2], k->ne[2]) * k->ne[2]));
    ggml_tensor * args[3] = {q, k, v};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, q->ne[0] * q->ne[1], q->ne[2], k->ne[3], 1, args, 3, attention_op,
                          GGML_N_TASKS_MAX, &scratch);
}

#else

bool blas_available() { return false; }
bool blas_supports(const ggml_tensor *) { return false; }
ggml_tensor * blas_linear(ggml_context *, ggml_tensor *, ggml_tensor *, BlasScratch &) { return nullptr; }
ggml_tensor * blas_attention(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *, BlasScratch &) {
    return nullptr;
}

#endif

namespace {

// OpenBLAS maps a working buffer (BUFFER_SIZE: 32 MiB in scipy-openblas32 0.3.34 on x86-64, measured) the first time
// a thread calls sgemm while no free one is left, and ends the whole process when that mapping fails ("Memory
// allocation still failed after 10 retries"). Room for one per thread (plus 8 MiB) is checked here instead, in
// the thread that asked for the encoding, so that an address-space limit (RLIMIT_AS, `ulimit -v`) gives a
// MemoryError rather than an exit.
constexpr size_t kBlasThreadBuffer = size_t(40) << 20;

bool address_space_has_room(size_t bytes) {
#if defined(__unix__) || defined(__APPLE__)
    void * p = mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return false;
    munmap(p, bytes);
#else
    (void)bytes;
#endif
    return true;
}

}  // namespace

void BlasScratch::prepare() {
    for (auto & b : buffers_) {
        if (b.size() < need_) b.resize(need_);
    }
    if (blas_available() && !address_space_has_room(buffers_.size() * kBlasThreadBuffer)) throw std::bad_alloc();
}

float * BlasScratch::get(int ith, size_t floats) {
    if (ith < 0 || size_t(ith) >= buffers_.size() || buffers_[size_t(ith)].size() < floats) {
        failed_ = true;  // never allocate (or throw) on a worker thread: the encoder reports it after compute
        return nullptr;
    }
    return buffers_[size_t(ith)].data();
}

size_t BlasScratch::bytes() const {
    size_t total = 0;
    for (const auto & b : buffers_) total += b.capacity() * sizeof(float);
    return total;
}

}  // namespace mcv
