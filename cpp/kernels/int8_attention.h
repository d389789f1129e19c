// Fused multi-head attention on the CPU's integer dot-product unit (with our AVX512-VNNI or AVX2 int8 kernel,
// int8_gemm.h), for the vision tower's self-attention.
// The f32 path (blas_ops.h) multiplies q k^T and the weights by v on OpenBLAS sgemm in tiles of query rows, at about
// half the sgemm peak. Here the products are on 16-bit integers (VPDPWSSD on AVX512-VNNI, VPMADDWD on AVX2: twice
// the f32 FMA's multiply-adds per instruction), which keeps what softmax needs: 8-bit products put errors of 1/254 of
// a row's largest value on the scores, softmax turns those absolute errors into relative errors of the weights, and
// rows of peaked attention fall to cosine 0.94 against f32; with 16 bits every row stays above 0.9999
// (tests/test_int8_attention.py).
//  - k and v are packed once per head (one op, int8_attention_pack.cpp; each thread a run of whole heads): k less
//    its mean over the keys per channel (softmax does not change: every score of a query row moves by the same
//    q . mean), int16 with one scale per key, at most 5461 for 72-wide heads so that int32 sums cannot overflow;
//    v int16 per channel per block of 64 keys (at most 4000).
//  - per tile of 16 query rows (int16, one scale per row), blocks of 64 keys: int32 scores, softmax online in base
//    2 (the running max and sum per row, earlier partial sums rescaled), the block's weights as int16 (at most
//    8191 for the block's largest), their int32 products with v, accumulated in f32. Scores never exist beyond one
//    16 x 64 tile.
// Both kernels compute the same integers and the same float steps: the same bits. Every query row's numbers depend
// only on its own data (tiles and blocks have fixed sizes), so they are the same on any thread count.
#pragma once

#include <cstdint>

#include "ggml.h"
#include "kernels/int8_gemm.h"

namespace mcv {

// whether int8_attention runs heads of d_head over n_kv keys with `isa` here (x86 builds; d_head up to 256; at
// least 32 keys: shorter attention, e.g. MiniCPM-V 4.6's 2x2 windows, stays on the f32 path). (The name: it runs
// where our int8 kernels do, on the same integer unit.)
bool int8_attention_supports(Int8Isa isa, int64_t d_head, int64_t n_kv);
// whether int8_attention runs on `isa` here at all (our x86 kernels, where the CPU has them; not NEON)
bool int8_attention_available(Int8Isa isa);

// softmax(q k^T / sqrt(d_head)) v per head, no mask, as two ggml custom ops on the CPU backend.
// q: [d_head, n_head, n_q, B or 1] (1: the same queries for every batch entry), k and v: [d_head, n_head, n_kv, B]
// -> [d_head * n_head, n_q, B] f32
ggml_tensor * int8_attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, Int8Isa isa);

}  // namespace mcv
