// CPU matmul and attention through OpenBLAS, as ggml custom ops (the graph builders' "matmul hook").
// ggml's own CPU matmul reaches about 60% of OpenBLAS's sgemm on the vision encoder's shapes (benchmarks/
// bench_encode.py prints both); these ops split the work over ggml's threads, each calling single-threaded
// sgemm. Weights stay in their file type (f32, f16, bf16 or block-quantized): each thread dequantizes only
// its own rows to f32 per call, which costs far less than the product it feeds.
// Activations stay f32 (ggml's f16 path rounds them to f16), so results are closer to the reference too.
#pragma once

#include "ggml.h"

namespace mcv {

// true when this build has OpenBLAS
bool blas_available();

// true when `w` can go through blas_linear (any contiguous matrix ggml can dequantize)
bool blas_supports(const ggml_tensor * w);

// x: [K, N, ...] f32 contiguous, w: [K, M] -> [M, N, ...] f32 (the same as ggml_mul_mat(w, x))
ggml_tensor * blas_linear(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w);

// softmax(q k^T / sqrt(d_head)) v per head, no mask, f32.
// q: [d_head, n_head, n_q, B or 1], k and v: [d_head, n_head, n_kv, B] -> [d_head * n_head, n_q, B]
ggml_tensor * blas_attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v);

}  // namespace mcv
