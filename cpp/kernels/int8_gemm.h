// Matrix products on the CPU's integer dot-product unit (AVX512-VNNI, AVX-VNNI, AVX2; NEON SDOT and I8MM), for
// block-quantized vision weights.
// ggml's own q8_0 matmul runs at about the f32 FMA rate on the encoder's shapes (it converts each 32-block's
// int32 sum to float on its own); here the weights are repacked once at load into 48-row panels laid out for
// VPDPBUSD and the products run in 4 x 48 register tiles, so each 32-block costs 8 dot-product instructions and
// three float ones per accumulator: ~3x ggml's q8_0 rate (benchmarks/bench_encode.py prints both). The AVX2
// kernel reads its panels (the weights signed, per pair of inputs 8 outputs x 2) 16 outputs at a time, widens them
// to int16 (VPMOVSXBW) and multiplies them by int16 activation pairs (VPMADDWD): one multiply per 16 products.
// Arithmetic is q8_0's (llama.cpp's language-model path): weights in 32-blocks of int8 with one scale each,
// activations quantized the same way per call (amax / 127, round to nearest); int32 sums within a block,
// f32 across blocks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "ggml.h"

namespace mcv {

// Which of our int8 kernels runs a packed matrix: AVX512-VNNI (VPDPBUSD on 512-bit vectors), AVX-VNNI (VPDPBUSD on
// 256-bit vectors: Intel client cores without AVX-512; on AVX-512 machines through AVX512-VL), AVX2 (VPMADDWD on
// 256-bit vectors of int16 pairs, for x86 without either), NEON (SDOT, aarch64 with the dot-product extension) or I8MM
// (SMMLA, aarch64 with the int8 matrix-multiply extension). All read the same packed integers (I8MM and AVX2 each in
// its own order) and give the same bits: the int32 block sums are exact on each, and the float steps are the same
// operations in the same order.
enum class Int8Isa { none, vnni, avx2, neon, avxvnni, i8mm };

// An activation our int8 kernel applies to a product's input as it quantizes it (the graph then has no node for
// it): GELU's tanh form (SigLIP's gelu_pytorch_tanh) or its exact erf form (timm's nn.GELU).
enum class InputAct { none, gelu_tanh, gelu_erf };

// "vnni", "avxvnni", "avx2", "i8mm", "neon" or "none"
const char * int8_isa_name(Int8Isa isa);
// whether this CPU and build run `isa`
bool int8_isa_available(Int8Isa isa);
// the kernel named "vnni", "avxvnni", "avx2", "i8mm" or "neon" (Int8Isa::none for any other name)
Int8Isa int8_isa_named(const std::string & name);
// how the kernel is named in words ("AVX512-VNNI", "AVX-VNNI", "AVX2", "NEON I8MM", "NEON SDOT")
const char * int8_isa_words(Int8Isa isa);
// the fastest of ours this CPU runs (none: ggml's kernels or dequantizing)
Int8Isa int8_best_isa();

// One weight matrix [k inputs, n outputs] repacked: for each panel of 48 outputs and each 32-block of inputs,
// 8 groups of 4 inputs x 3 vectors of 16 outputs (w + 128 as unsigned bytes, what VPDPBUSD multiplies), then the
// 48 scales. k and n are padded with zeros to whole blocks and panels.
class PackedWeight {
public:
    static constexpr int64_t kBlock = 32;  // inputs per scale (q8_0's block)
    static constexpr int64_t kPanel = 48;  // outputs per panel (3 AVX-512 vectors)

    // From a host-readable ggml matrix of any type ggml can dequantize. q8_0 and q4_0 blocks are taken exactly;
    // other types are dequantized and quantized to 32-blocks (rows zero-padded to whole blocks).
    explicit PackedWeight(const ggml_tensor * w, Int8Isa isa = Int8Isa::vnni);

    int64_t k() const { return k_; }
    int64_t n() const { return n_; }
    int64_t blocks() const { return k_pad_ / kBlock; }
    int64_t panels() const { return n_pad_ / kPanel; }
    size_t bytes() const { return bytes_; }
    bool exact() const { return exact_; }  // the file's own integers and scales, not re-quantized
    Int8Isa isa() const { return isa_; }   // the kernel that multiplies it
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
    Int8Isa isa_ = Int8Isa::vnni;
    std::unique_ptr<uint8_t, Free> data_;  // 64-byte aligned
};

// Whether this CPU and build run one of our kernels (int8_best_isa() is not none)
bool int8_gemm_available();

// The dot-product unit's peak on this CPU for `isa`, G multiply-adds x 2 per second: independent chains of the
// kernel's own instructions (VPDPBUSD; for AVX2 the unit's int8 rate, VPMADDUBSW + VPMADDWD + VPADDD: 32 products
// per two multiplies, the rate VPMADDWD's 16 per one also has) on n_threads threads (0 where `isa` is not
// available); what benchmarks/bench_encode.py sets our rate beside
double int8_dot_peak_gops(int n_threads, Int8Isa isa = Int8Isa::vnni);

// Packed weights of one encoder, by the ggml tensor they replace in graphs.
class PackedWeights {
public:
    // repacks `weights` (host-readable) on n_threads threads for `isa`'s kernel, calling `packed(w)` (on the thread
    // that packed it) once each is done, so that its original can be let go at once; exceptions (std::bad_alloc)
    // reach the caller
    void add(const std::vector<const ggml_tensor *> & weights, int n_threads, Int8Isa isa,
             const std::function<void(const ggml_tensor *)> & packed = {});
    const PackedWeight * find(const ggml_tensor * w) const {
        auto it = packed_.find(w);
        return it == packed_.end() ? nullptr : it->second.get();
    }
    size_t size() const { return packed_.size(); }
    size_t bytes() const;
    Int8Isa isa() const { return packed_.empty() ? Int8Isa::none : packed_.begin()->second->isa(); }

private:
    std::unordered_map<const ggml_tensor *, std::unique_ptr<PackedWeight>> packed_;
};

// A LayerNorm our int8 kernel computes over each row of a product's input as it quantizes it (the graph then has no
// norm, scale or shift nodes, nor their passes over memory): (x - mean) / sqrt(var + eps) * w + b. w and b (b may be
// null): f32 [k] in host memory; eps is read when the graph runs, so it must outlive the graph (the model's own).
// The mean and variance are float sums in a fixed order (16 partial sums): the same bits on every kernel.
struct RowNorm {
    const ggml_tensor * w = nullptr;
    const ggml_tensor * b = nullptr;
    const float * eps = nullptr;
};
// whether `norm` is one int8_quantize takes for w's inputs (f32 contiguous weights of w.k() values)
bool int8_fusable_norm(const RowNorm & norm, const PackedWeight & w);

// x: [k, N, ...] f32 -> [n, N, ...] f32 = w x, as two ggml custom ops on the CPU backend: the activations are
// quantized per 32-block (rows split over threads), then the product (panels split over threads). `w` must
// outlive the graph; w.isa() must be available.
// `bias` (f32 [n], int8_fusable_bias): added as each tile is stored (the sums ggml_add would give, without its pass
// over memory); `act`: the product takes act(x), computed as the activations are quantized
// (the graph then has no GELU node); `norm` (int8_fusable_norm): the product takes act(norm(x)).
ggml_tensor * int8_linear(ggml_context * ctx, ggml_tensor * x, const PackedWeight & w, ggml_tensor * bias = nullptr,
                          InputAct act = InputAct::none, const RowNorm & norm = {});
// int8_linear's two ops apart, for products of one input (attention's q, k and v): x's rows quantized once (op
// "quantize <x>"), then each product of them, for every weight int8_shares_quantized with `w` (the same inputs, the
// same kernel: the same quantized layout).
ggml_tensor * int8_quantize(ggml_context * ctx, ggml_tensor * x, const PackedWeight & w, InputAct act = InputAct::none,
                            const RowNorm & norm = {});
ggml_tensor * int8_product(ggml_context * ctx, ggml_tensor * q, const ggml_tensor * x, const PackedWeight & w,
                           ggml_tensor * bias = nullptr);
bool int8_shares_quantized(const PackedWeight & a, const PackedWeight & b);
bool int8_fusable_bias(const ggml_tensor * b, const PackedWeight & w);

}  // namespace mcv
