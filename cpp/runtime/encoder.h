// The vision encoder owner: backends, scheduler and weights, created once; pieces in, embeddings out.
// Buffer life cycle as in ggml's examples: reserve the worst-case graph at load, then per batch of pieces
// reset, allocate, set inputs, compute, read the output.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "ggml-cpp.h"
#include "graphs/eva.h"
#include "graphs/minicpmv4_6.h"
#include "graphs/resampler.h"
#include "graphs/siglip.h"
#include "kernels/blas_ops.h"
#include "kernels/int8_gemm.h"
#include "runtime/cpu_threads.h"
#include "runtime/mmproj.h"

namespace mcv {

struct EncoderOptions {
    int n_threads = 4;
    std::string device = "cpu";  // "cpu", "auto" (the first GPU ggml offers, else CPU) or a ggml device name
    KeyValues key_defaults;      // graph-variant keys for files that lack them (the family's, for llama.cpp's files)
    KeyValues key_overrides;     // graph-variant keys that replace the file's (experiments: llama.cpp's position ids)
    size_t max_batch_bytes = size_t(256) << 20;  // cap on the attention scores of one graph evaluation
    int64_t max_patches = 0;  // largest piece accepted, in patches (0: no limit); bounds every buffer
    bool blas = true;         // OpenBLAS matmuls and attention on the CPU, when this build has it
    bool profile = false;     // time every node (slower: the scheduler then runs one node at a time)
    bool use_mmap = true;     // CPU weights straight from the memory-mapped file (no copy at load)
    // block-quantized weights on integer dot products: "auto" (our fastest int8 kernel the CPU runs: AVX512-VNNI,
    // else AVX2, else NEON SDOT; else ggml's int8 kernels where the CPU has VNNI / DOTPROD / I8MM, else off), "on"
    // (ours, else ggml's), "vnni", "avx2" or "neon" (that kernel of ours; std::invalid_argument where the CPU lacks
    // it), "ggml" (ggml's), or "off" (dequantized for OpenBLAS, like f16)
    std::string int8 = "auto";
    // attention: "auto" (our fused int8 attention for self-attention of 256 tokens or more where our int8 kernel
    // runs the file's block-quantized matrices, else f32), "int8" (ours wherever it takes the shape, on any
    // file; std::invalid_argument where none of our int8 kernels runs here) or "f32" (OpenBLAS, or ggml's flash
    // attention)
    std::string attention = "auto";
};

// One graph evaluation: B pieces of one patch grid through SigLIP (or OmniLMM's EVA tower) and the resampler, or
// through MiniCPM-V 4.6's tower and mergers.
struct EncoderGraph {
    ggml_context_ptr ctx;  // metadata only; memory is the owner's reusable buffer
    std::unique_ptr<SiglipGraph> siglip;
    std::unique_ptr<EvaGraph> eva;
    std::unique_ptr<ResamplerGraph> resampler;
    std::unique_ptr<Minicpmv46Graph> v46;
    ggml_cgraph * graph = nullptr;
    ggml_tensor * out = nullptr;  // [E, rows per piece, B]
};

struct Piece {
    const float * chw = nullptr;  // [3, height, width] normalised pixels
    int width = 0;
    int height = 0;
    // A padded vision batch (VisionHParams::padded_batch; the original `get_vllm_embedding` with
    // batch_vision_input): the tower sees the piece as a strip of pad_to patches, its own patches first, then zero
    // pixels, every position a key; positions are the 1-D rule over pad_to; the resampler then reads the piece's own
    // patches only. 0: the piece alone.
    int pad_to = 0;
    // MiniCPM-V 4.6's token reduction (hparams().merger minicpmv4_6): kDownsample16x (4: h/4 x w/4 rows),
    // kDownsample4x (2: h/2 x w/2 rows), or 0: the file's default (hparams().default_downsample). Resampler files
    // take 0 only.
    int downsample = 0;
};

// MiniCPM-V 4.5's packed unit (a video group's frames at one piece index): frame-pieces of one patch grid whose
// keys the resampler attends as one sequence, each frame's keys carrying its 2-D code and the temporal code of its
// time id (-1: none); Q rows per unit.
struct PackedUnit {
    std::vector<size_t> pieces;     // indices into the pieces, in frame order
    std::vector<int> temporal_ids;  // one per frame-piece
};

// Thread safety: encode() may be called from several threads on one object; calls are serialised.
// Every failure is an exception: std::invalid_argument for bad pieces, OutOfMemory for allocations.
class VisionEncoder {
public:
    VisionEncoder(const std::string & path, const EncoderOptions & opt);

    // [total rows, E] row-major float32: every piece's rows (tokens()), pieces in the given order
    std::vector<float> encode(const std::vector<Piece> & pieces);
    // [units * Q, E]: each packed unit's Q rows, units in the given order; the tower runs per frame-piece, the
    // resampler once per unit (a file with hparams().temporal; pieces of one unit share their patch grid)
    std::vector<float> encode_units(const std::vector<Piece> & pieces, const std::vector<PackedUnit> & units);

    // the rows a piece of h x w patches gives in `downsample` mode (see Piece::downsample): Q for a resampler file,
    // (h / 4) * (w / 4) or (h / 2) * (w / 2) for minicpmv4_6; std::invalid_argument for a mode the file cannot run
    // or a grid the mode cannot divide
    int64_t tokens(int h_patches, int w_patches, int downsample = 0) const;
    // the mode a Piece::downsample of `downsample` runs in (0 for resampler files); std::invalid_argument for a mode
    // the file cannot run
    int resolve_downsample(int downsample) const;

    const VisionHParams & hparams() const { return model_.hp; }
    std::string device_name() const;
    size_t weights_bytes() const;
    size_t compute_bytes() const;
    int graph_evaluations() const { return n_evals_; }
    bool legacy_ffn_names() const { return model_.legacy_ffn_names; }
    bool uses_blas() const { return mm_.blas != nullptr; }
    bool weights_mapped() const { return model_.mapped(); }
    bool uses_int8() const { return mm_.int8; }
    // what runs this file's block-quantized matrices: "vnni", "avx2" or "neon" (our kernels, weights repacked at load),
    // "ggml" (its int8 kernels) or "off" (dequantized, or the file has none)
    std::string int8_kernel() const {
        return packed_.size() ? int8_isa_name(packed_.isa()) : mm_.int8 && quantized_file() ? "ggml" : "off";
    }
    size_t packed_bytes() const { return packed_.bytes(); }
    // what runs attention: "vnni" or "avx2" (our fused int8 attention, x86 only, where it takes the shape) or "f32"
    std::string attention_kernel() const {
        return mm_.attention == Int8Isa::none ? "f32" : int8_isa_name(mm_.attention);
    }
    // how this file's matrix products run, in words (minicpmv-edge info)
    std::string matmul_summary() const;
    size_t scratch_bytes() const { return scratch_ ? scratch_->bytes() : 0; }
    int64_t max_patches() const { return opt_.max_patches; }
    void set_max_patches(int64_t n);
    // with EncoderOptions::profile: milliseconds per "op:node-name-without-layer" since construction
    std::map<std::string, double> profile() const;

private:
    // a batch of pieces whose tower grid is ph x pw and whose own patch grid is rh x rw (equal unless padded);
    // piece index[b]'s rows start at row offset[index[b]] of `out`
    // compute buffers (and the BLAS scratch) for graph `g`; `what` names the work in the OutOfMemory message
    void allocate(const EncoderGraph & g, const std::string & what);
    void run_batch(const std::vector<Piece> & pieces, const std::vector<size_t> & index,
                   const std::vector<size_t> & offset, int ph, int pw, int rh, int rw, int downsample, float * out);
    EncoderGraph build_graph(int ph, int pw, int n_batch, int rh, int rw, int downsample, int n_frames = 0);
    // a batch of packed units of n_frames frame-pieces of rh x rw patches each; unit index[u]'s rows start at row
    // index[u] * Q of `out`
    void run_units(const std::vector<Piece> & pieces, const std::vector<PackedUnit> & units,
                   const std::vector<size_t> & index, int rh, int rw, int n_frames, float * out);
    // checks a piece (std::invalid_argument naming piece i) and returns its patches
    int64_t check_piece(const Piece & p, size_t i) const;

    EncoderOptions opt_;
    std::unique_ptr<CpuThreadPool> pool_;  // the CPU's worker threads, started once (outlives the backends)
    ggml_backend_ptr backend_;             // where the weights live
    ggml_backend_ptr cpu_;                 // fallback for ops the device lacks (null when the device is the CPU)
    std::vector<ggml_backend_t> backends_;
    ggml_backend_sched_ptr sched_;
    VisionModel model_;
    std::vector<uint8_t> meta_;  // graph metadata memory, reused by every evaluation
    int n_evals_ = 0;
    std::unique_ptr<BlasScratch> scratch_;  // the BLAS ops' per-thread memory (null on the pure ggml path)
    PackedWeights packed_;                  // matrices repacked for the int8 kernel (empty when it is not used)
    Int8Isa isa_ = Int8Isa::none;           // which of our int8 kernels runs them (none: not ours)
    void pack_int8_weights();
    std::vector<const ggml_tensor *> matrices() const;  // every layer's and the projector's weight matrices
    bool quantized_file() const;                        // some of them are block-quantized
    MatmulHook mm_;
    mutable std::mutex mu_;  // one evaluation at a time: the scheduler, buffers and scratch are shared
    std::map<std::string, double> profile_ms_;
    std::chrono::steady_clock::time_point last_node_;
    static bool on_node(ggml_tensor * t, bool ask, void * self);
};

}  // namespace mcv
