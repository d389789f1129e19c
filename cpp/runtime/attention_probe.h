// One attention op run alone on the CPU backend, on host arrays: what tests compare the int8 attention with the f32
// path through, and what benchmarks/bench_encode.py times each path's attention with.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mcv {

struct AttentionRun {
    std::vector<float> out;  // [B, n_q, n_head * d_head]
    double seconds = 0.0;    // the best of the timed computes
};

// q: [Bq, n_q, n_head, d_head] with Bq = B or 1 (the same queries for every batch entry), k and v:
// [B, n_kv, n_head, d_head], row-major f32. kind: "f32" (the encoder's f32 attention: OpenBLAS tiles, or ggml's
// flash attention in a build without OpenBLAS), "vnni" or "avx2" (int8_attention on that kernel; std::invalid_argument
// where the CPU or the shape cannot take it). The op runs `repeat` times (at least once) on n_threads threads.
AttentionRun run_attention(const std::vector<float> & q, const std::vector<float> & k, const std::vector<float> & v,
                           int64_t batch, int64_t q_batch, int64_t n_q, int64_t n_kv, int64_t n_head, int64_t d_head,
                           const std::string & kind, int n_threads, int repeat);

}  // namespace mcv
