// CPU matmul and attention through OpenBLAS, as ggml custom ops (the graph builders' "matmul hook").
// ggml's own CPU matmul reaches about 60% of OpenBLAS's sgemm on the vision encoder's shapes (benchmarks/
// bench_encode.py prints both); these ops split the work over ggml's threads, each calling single-threaded
// sgemm. Weights stay in their file type (f32, f16, bf16 or block-quantized): each thread dequantizes only
// its own rows to f32 per call, which costs far less than the product it feeds.
// Activations stay f32 (ggml's f16 path rounds them to f16), so results are closer to the reference too.
#pragma once

#include <atomic>
#include <cstddef>
#include <vector>

#include "ggml.h"

namespace mcv {

// Per-thread scratch memory of the BLAS ops, owned by one encoder: the graph builders record what each op needs,
// the encoder allocates it in its own thread before computing (a failure there is a MemoryError), and worker
// threads only use it. Its size is bounded by the weights and the attention tile, not by the piece size.
class BlasScratch {
public:
    explicit BlasScratch(int n_threads) : buffers_(size_t(n_threads > 0 ? n_threads : 1)) {}
    void need(size_t floats) { need_ = floats > need_ ? floats : need_; }  // while building a graph
    void prepare();  // allocate what was recorded; check room for OpenBLAS's own buffers (throws std::bad_alloc)
    float * get(int ith, size_t floats);  // in an op: the thread's buffer, or null (then failed() is set)
    bool take_failure() { return failed_.exchange(false); }
    size_t n_threads() const { return buffers_.size(); }
    size_t bytes() const;

private:
    std::vector<std::vector<float>> buffers_;
    size_t need_ = 0;
    std::atomic<bool> failed_{false};
};

// true when this build has OpenBLAS
bool blas_available();

// true when `w` can go through blas_linear (any contiguous matrix ggml can dequantize)
bool blas_supports(const ggml_tensor * w);

// x: [K, N, ...] f32 contiguous, w: [K, M] -> [M, N, ...] f32 (the same as ggml_mul_mat(w, x))
ggml_tensor * blas_linear(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, BlasScratch & scratch);

// softmax(q k^T / sqrt(d_head)) v per head, no mask, f32; the scores are computed a tile of query rows at a time,
// so memory does not grow with n_q x n_kv.
// q: [d_head, n_head, n_q, B or 1], k and v: [d_head, n_head, n_kv, B] -> [d_head * n_head, n_q, B]
ggml_tensor * blas_attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v,
                             BlasScratch & scratch);

}  // namespace mcv
