// Matrix products on the CPU's integer dot-product unit (AVX512-VNNI), for block-quantized vision weights.
// ggml's own q8_0 matmul runs at about the f32 FMA rate on the encoder's shapes (it converts each 32-block's
// int32 sum to float on its own); here the weights are repacked once at load into 48-row panels laid out for
// VPDPBUSD and the products run in 4 x 48 register tiles, so each 32-block costs 8 dot-product instructions and
// three float ones per accumulator: ~3x ggml's q8_0 rate (benchmarks/bench_encode.py prints both).
// Arithmetic is q8_0's (llama.cpp's language-model path): weights in 32-blocks of int8 with one scale each,
// activations quantized the same way per call (amax / 127, round to nearest); int32 sums within a block,
// f32 across blocks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "ggml.h"

namespace mcv {

// One weight matrix [k inputs, n outputs] repacked: for each panel of 48 outputs and each 32-block of inputs,
// 8 groups of 4 inputs x 3 vectors of 16 outputs (w + 128 as unsigned bytes, what VPDPBUSD multiplies), then the
// 48 scales. k and n are padded with zeros to whole blocks and panels.
class PackedWeight {
public:
    static constexpr int64_t kBlock = 32;  // inputs per scale (q8_0's block)
    static constexpr int64_t kPanel = 48;  // outputs per panel (3 AVX-512 vectors)

    // From a host-readable ggml matrix of any type ggml can dequantize. q8_0 and q4_0 blocks are taken exactly;
    // other types are dequantized and quantized to 32-blocks (rows zero-padded to whole blocks).
    explicit PackedWeight(const ggml_tensor * w);

    int64_t k() const { return k_; }
    int64_t n() const { return n_; }
    int64_t blocks() const { return k_pad_ / kBlock; }
    int64_t panels() const { return n_pad_ / kPanel; }
    size_t bytes() const { return bytes_; }
    bool exact() const { return exact_; }  // the file's own integers and scales, not re-quantized
    const uint8_t * panel(int64_t p) const { return data_.get() + size_t(p) * panel_bytes(); }
    size_t panel_bytes() const { return size_t(blocks()) * (kBlock * kPanel + kPanel * sizeof(float)); }

private:
    struct Free {
        void operator()(uint8_t * p) const { std::free(p); }
    };
    void put_block(int64_t row, int64_t block, const int8_t * q, float scale);

    int64_t k_ = 0, n_ = 0, k_pad_ = 0, n_pad_ = 0;
    size_t bytes_ = 0;
    bool exact_ = false;
    std::unique_ptr<uint8_t, Free> data_;  // 64-byte aligned
};

// Whether this CPU and build run the kernel (x86-64 with AVX512F/BW/VL and AVX512-VNNI)
bool int8_gemm_available();

// The dot-product unit's peak on this CPU, G multiply-adds x 2 per second: independent VPDPBUSD chains on
// n_threads threads (0 where the kernel is not available); what benchmarks/bench_encode.py sets our rate beside
double int8_dot_peak_gops(int n_threads);

// Packed weights of one encoder, by the ggml tensor they replace in graphs.
class PackedWeights {
public:
    // repacks `weights` (host-readable) on n_threads threads; exceptions (std::bad_alloc) reach the caller
    void add(const std::vector<const ggml_tensor *> & weights, int n_threads);
    const PackedWeight * find(const ggml_tensor * w) const {
        auto it = packed_.find(w);
        return it == packed_.end() ? nullptr : it->second.get();
    }
    size_t size() const { return packed_.size(); }
    size_t bytes() const;

private:
    std::unordered_map<const ggml_tensor *, std::unique_ptr<PackedWeight>> packed_;
};

// x: [k, N, ...] f32 -> [n, N, ...] f32 = w x, as two ggml custom ops on the CPU backend: the activations are
// quantized per 32-block (rows split over threads), then the product (panels split over threads). `w` must
// outlive the graph; int8_gemm_available() must be true.
ggml_tensor * int8_linear(ggml_context * ctx, ggml_tensor * x, const PackedWeight & w);

}  // namespace mcv
