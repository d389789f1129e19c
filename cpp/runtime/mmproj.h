// A MiniCPM-V vision encoder + projector ("mmproj") GGUF, as llama.cpp and our converter write it
// (llama.cpp's `clip-impl.h` names): hyper-parameters and weight tensors, validated by name, type and shape.
// Two projectors: the perceiver resampler (MiniCPM-V 1.0 ... 4.5) and MiniCPM-V 4.6's mergers
// (`clip.projector_type` "minicpmv4_6": an insert merger inside the tower and a 2x2 merger after it).
#pragma once

#include <array>
#include <map>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "ggml-cpp.h"
#include "ggml.h"
#include "runtime/mapped_file.h"

namespace mcv {

// How a piece's patches get their position embedding (the mmproj key minicpmv_edge.vision.position_embedding).
enum class PosEmbedding {
    buckets,         // rows of a pos_side^2 table picked by bucket ids (see PosRule)
    resampled_grid,  // the pos_side x pos_side table resized to the piece's patch grid, antialiased bicubic
};

// How a piece's patches pick rows of the position table (minicpmv_edge.vision.position_ids).
enum class PosRule {
    navit_2d,  // 2-D buckets, the original float32 torch.bucketize results (not exact floor: docs/sources.md)
    flat_1d,   // the original's mask-shape quirk: 1-D buckets over the flattened piece, first table row
    floor_2d,  // llama.cpp's rule: floor(side * i / n) in both directions
    // transformers 5.x `get_vision_nearest_position_ids` (MiniCPM-V 4.6): 2-D buckets of float32 i / n against
    // the float32 boundaries arange(1 / side, 1, 1 / side)
    nearest_2d,
};

// What turns the tower's features into the language model's rows (`clip.projector_type`).
enum class Merger {
    resampler,    // Q learned queries cross-attend to the piece: Q rows per piece
    minicpmv4_6,  // MiniCPM-V 4.6: insert merger after layer insert_layer (16x), then a 2x2 merger MLP
};

// MiniCPM-V 4.6's token reduction per piece, as the merge factor per side (llama.cpp's n_merge): 16x runs the
// insert merger and the final 2x2 merger (h/4 x w/4 rows), 4x the final merger only (h/2 x w/2 rows).
constexpr int kDownsample16x = 4;
constexpr int kDownsample4x = 2;

// The resampler's key positions (minicpmv_edge.resampler.key_positions).
enum class KeyPositions {
    sincos,  // the 2-D sin-cos code of the piece's patch grid, computed per piece
    stored,  // the file's resampler.pos_embed_k, one row per patch of the only piece size (MiniCPM-V 1.0)
};

// The vision tower's graph (minicpmv_edge.vision.tower).
enum class Tower {
    siglip,  // pre-LN blocks, no class token (MiniCPM-V's SigLIP / SigLIP2)
    eva,     // OmniLMM-12B's EVA02-E: a class token, residual post-norm blocks, final LN, class token dropped
};

// The vision MLP's activation (minicpmv_edge.vision.gelu; llama.cpp's files: clip.use_gelu, the tanh form).
enum class Gelu { tanh, erf };

// The block-quantized types a matrix of ours may have (ggml's int8 dot-product kernels, or our own, run them).
inline bool block_quantized(ggml_type t) {
    switch (t) {
        case GGML_TYPE_Q8_0:
        case GGML_TYPE_Q4_0:
        case GGML_TYPE_Q4_1:
        case GGML_TYPE_Q5_0:
        case GGML_TYPE_Q5_1:
        case GGML_TYPE_Q4_K:
        case GGML_TYPE_Q5_K:
        case GGML_TYPE_Q6_K: return true;
        default: return false;
    }
}

// Values of the graph's variant keys (minicpmv_edge.vision.*) as text ("true"/"false" for a bool key): the
// defaults a model family gives files that lack a key (llama.cpp's), or overrides of the file's value.
using KeyValues = std::map<std::string, std::string>;

struct VisionHParams {
    int image_size = 0;  // slicing scale resolution (448), not SigLIP's 980
    int patch_size = 0;  // 14
    int n_embd = 0;      // D: vision width (1152)
    int n_ff = 0;        // F: vision MLP width (4304)
    int n_head = 0;      // vision attention heads (16)
    int n_layer = 0;     // vision blocks, all run (27)
    float eps = 1e-6f;   // every LayerNorm, the resampler's included (4.6's final merger: 1e-6 always)
    int pos_side = 0;    // the learned position table is pos_side x pos_side (70)
    int n_query = 0;     // Q: resampler queries = output tokens per piece (64 or 96); 0 for minicpmv4_6
    int n_out = 0;       // E: output width = the language model's width (3584)
    std::array<float, 3> mean{};
    std::array<float, 3> std{};
    int minicpmv_version = 0;  // as stored; informational, the graph does not depend on it
    PosEmbedding pos_embedding = PosEmbedding::buckets;
    PosRule pos_rule = PosRule::navit_2d;
    Gelu gelu = Gelu::tanh;
    // the prompt's pieces run as one zero-padded batch, padding attended (minicpmv_edge.vision.padded_batch; a
    // family's original with 1-D position ids): Piece::pad_to
    bool padded_batch = false;
    // every image is one image_size x image_size piece (minicpmv_edge.vision.slicing "square")
    bool square = false;
    KeyPositions key_positions = KeyPositions::sincos;
    // MiniCPM-V 4.5's "3-D" resampler (minicpmv_edge.resampler.temporal): packed units of video frame-pieces,
    // each frame-piece's keys carrying its 2-D code plus a 1-D temporal code (VisionEncoder::encode_units)
    bool temporal = false;
    Merger merger = Merger::resampler;
    Tower tower = Tower::siglip;
    // the normalised pixels are rounded to float16 before the tower (minicpmv_edge.vision.pixels_f16: OmniLMM's
    // original casts them with .half())
    bool pixels_f16 = false;
    // minicpmv4_6: the insert merger runs after this tower layer (clip.vision.wa_layer_indexes[0]; -1: unknown,
    // a 4x-only file without the key)
    int insert_layer = -1;
    // minicpmv4_6: the file has the insert merger's tensors (clip.vision.projector.scale_factor 4), so it runs
    // 16x and 4x; without them (scale_factor 2) 4x only
    bool has_insert_merger = false;
    // minicpmv4_6: the mode a piece without its own gets (minicpmv_edge.vision.downsample_mode "16x" / "4x";
    // absent: 16x when the file has the insert merger, else 4x); 0 for resampler files
    int default_downsample = 0;
    // the original resampler's torch MultiheadAttention: E // 128 heads of E / heads channels each
    int resampler_heads() const { return n_out / 128; }
};

struct VisionLayer {
    ggml_tensor *ln1_w = nullptr, *ln1_b = nullptr;  // [D]
    ggml_tensor *q_w = nullptr, *q_b = nullptr;      // [D, D], [D]
    ggml_tensor *k_w = nullptr, *k_b = nullptr;
    ggml_tensor *v_w = nullptr, *v_b = nullptr;
    ggml_tensor *o_w = nullptr, *o_b = nullptr;
    ggml_tensor *ln2_w = nullptr, *ln2_b = nullptr;
    ggml_tensor *fc1_w = nullptr, *fc1_b = nullptr;  // [D, F], [F]   (expanding)
    ggml_tensor *fc2_w = nullptr, *fc2_b = nullptr;  // [F, D], [D]   (contracting)
};

struct VisionModel {
    std::string path;
    VisionHParams hp;
    ggml_tensor * patch_w = nullptr;   // [P, P, 3, D] conv kernel
    ggml_tensor * patch_b = nullptr;   // [D]
    ggml_tensor * pos_embd = nullptr;  // [D, pos_side^2]
    std::vector<VisionLayer> layers;
    ggml_tensor * class_embd = nullptr;                      // [D] Tower::eva's class token
    ggml_tensor * class_pos = nullptr;                       // [D] its position row
    ggml_tensor *post_ln_w = nullptr, *post_ln_b = nullptr;  // [D]
    // resampler (one cross-attention layer, E // 128 heads; absent in minicpmv4_6 files)
    ggml_tensor * query = nullptr;                         // [E, Q]
    ggml_tensor * query_pos = nullptr;                     // [E, Q] added to LN_q(query), optional
    ggml_tensor * key_pos = nullptr;                       // [E, N] added to the keys (KeyPositions::stored)
    ggml_tensor * kv_w = nullptr;                          // [D, E], no bias
    ggml_tensor *attn_q_w = nullptr, *attn_q_b = nullptr;  // [E, E], [E]
    ggml_tensor *attn_k_w = nullptr, *attn_k_b = nullptr;
    ggml_tensor *attn_v_w = nullptr, *attn_v_b = nullptr;
    ggml_tensor *attn_o_w = nullptr, *attn_o_b = nullptr;
    ggml_tensor *ln_q_w = nullptr, *ln_q_b = nullptr;  // [E]
    ggml_tensor *ln_kv_w = nullptr, *ln_kv_b = nullptr;
    ggml_tensor *ln_post_w = nullptr, *ln_post_b = nullptr;
    ggml_tensor * proj_w = nullptr;  // [E, E]: out = proj_w x (stored transposed)
    // MiniCPM-V 4.6's insert merger (v.vit_merger.*): window attention, then a 2x2 merge MLP plus the window mean
    ggml_tensor *wm_ln_w = nullptr, *wm_ln_b = nullptr;  // [D]
    ggml_tensor *wm_q_w = nullptr, *wm_q_b = nullptr;    // [D, D], [D]
    ggml_tensor *wm_k_w = nullptr, *wm_k_b = nullptr;
    ggml_tensor *wm_v_w = nullptr, *wm_v_b = nullptr;
    ggml_tensor *wm_o_w = nullptr, *wm_o_b = nullptr;
    ggml_tensor *wm_ds_ln_w = nullptr, *wm_ds_ln_b = nullptr;      // [4D]
    ggml_tensor *wm_ds_up_w = nullptr, *wm_ds_up_b = nullptr;      // [4D, 4F], [4F]
    ggml_tensor *wm_ds_down_w = nullptr, *wm_ds_down_b = nullptr;  // [4F, D], [D]
    // MiniCPM-V 4.6's final 2x2 merger (mm.*): LayerNorm(4D) -> linear -> GELU (erf) -> linear
    ggml_tensor *mg_ln_w = nullptr, *mg_ln_b = nullptr;      // [4D]
    ggml_tensor *mg_up_w = nullptr, *mg_up_b = nullptr;      // [4D, 4D], [4D]
    ggml_tensor *mg_down_w = nullptr, *mg_down_b = nullptr;  // [4D, E], [E]
    bool legacy_ffn_names = false;  // fc1/fc2 stored as ffn_down/ffn_up (llama.cpp's legacy converter)
    std::vector<float> pos_table;   // [pos_side^2, D] f32 host copy, for PosEmbedding::resampled_grid

    std::unique_ptr<MappedFile> mapping;  // the file, when the CPU weights point into it (outlives `weights`)
    ggml_context_ptr ctx;                 // tensor metadata
    ggml_backend_buffer_ptr weights;      // tensor data (over `mapping`, or a copy)
    bool mapped() const { return mapping != nullptr; }
};

// Reads and checks `path`, then loads the weights into a buffer of type `buft`; with `use_mmap` and a host
// buffer type, the weights are the memory-mapped file itself (nothing copied; the header is parsed once). The graph's
// variant keys come from `overrides`, else the file, else `defaults`.
// Throws std::invalid_argument naming the file and the key or tensor for anything malformed.
VisionModel load_mmproj(const std::string & path, ggml_backend_buffer_type_t buft, bool use_mmap = true,
                        const KeyValues & defaults = {}, const KeyValues & overrides = {});

}  // namespace mcv
