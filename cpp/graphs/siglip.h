// The SigLIP(-NaViT) vision tower of MiniCPM-V as a ggml graph (the original `modeling_navit_siglip.py`; llama.cpp's
// `models/minicpmv.cpp` names): patch embedding, learned positions (bucketed onto the pos_side^2 table, or the table
// resized to the piece), pre-LN blocks with GELU MLPs, post-LN. One graph encodes B pieces of the same patch grid.
#pragma once

#include <cstdint>
#include <vector>

#include "graphs/graph_common.h"
#include "runtime/mmproj.h"

namespace mcv {

// ids[i * w + j] for a piece of h x w patches
std::vector<int32_t> position_ids(int h, int w, int side, PosRule rule);

// GELU of `kind`; `exact`: the tanh form as its formula in f32 (else ggml_gelu, whose CPU table reads the
// f16-rounded input: about 1e-3 relative error)
ggml_tensor * gelu(ggml_context * ctx, ggml_tensor * x, Gelu kind, bool exact);

// the int8 kernel's fused form of GELU `kind`
inline InputAct fused_gelu(Gelu kind) { return kind == Gelu::tanh ? InputAct::gelu_tanh : InputAct::gelu_erf; }

// the patch embedding (the stride-P conv as a matmul over patches) plus `pos` [D, N], the pixels first rounded to
// float16 where the file says so (minicpmv_edge.vision.pixels_f16): patches [P*P*3, N, B] -> [D, N, B]
ggml_tensor * patch_embedding(ggml_context * ctx, const VisionModel & model, ggml_tensor * patches, ggml_tensor * pos,
                              MatmulHook mm);

// a ViT block's two branches, full attention over the N tokens of each piece: x [D, N, B] -> [D, N, B].
// attention: proj(softmax(q k^T) v) of x; mlp: fc2(gelu(fc1(x))), the GELU fused into fc2's activation quantization
// where fc2 runs on our int8 kernel (else exact where `exact_gelu`: gelu()'s note). `norm`: of norm(x) (a pre-LN
// block's; fused into the quantization of the branch's first products where they run on our int8 kernel)
ggml_tensor * attention_branch(ggml_context * ctx, ggml_tensor * x, const VisionLayer & L, const VisionHParams & hp,
                               int il, MatmulHook mm, const InputNorm & norm = {});
ggml_tensor * mlp_branch(ggml_context * ctx, ggml_tensor * x, const VisionLayer & L, const VisionHParams & hp,
                         bool exact_gelu, int il, MatmulHook mm, const InputNorm & norm = {});

// one pre-LN SigLIP block (x + attention(LN1(x)), then x + mlp(LN2(x))): x [D, N, B] -> [D, N, B]
ggml_tensor * siglip_block(ggml_context * ctx, ggml_tensor * x, const VisionLayer & L, const VisionHParams & hp,
                           bool exact_gelu, int il, MatmulHook mm);

// host-side patchify: CHW pixels [3, h*P, w*P] -> [P*P*3, h*w] in the conv kernel's (kx, ky, c) order
void patchify(const float * chw, int h, int w, int patch, float * out);

// a graph's patch input [P*P*3, N, B] set from B pieces of h x w patches each (h * w <= N: the rest zero pixels)
void set_patches(ggml_tensor * inp_patches, const std::vector<const float *> & pixels, int h, int w, int patch);

// [h * w, dim]: a side x side table [side^2, dim] resized to h x w the way torch's
// F.interpolate(mode="bicubic", antialias=True, align_corners=False) does it (timm's resample_abs_pos_embed);
// the table itself when h == w == side
std::vector<float> resample_grid(const std::vector<float> & table, int side, int dim, int h, int w);

struct SiglipGraph {
    const VisionModel & model;
    const VisionHParams & hp;
    const int ph, pw;   // patch grid of every piece in the batch
    const int n_patch;  // ph * pw
    const int n_batch;  // pieces encoded together
    const int d_head;
    const MatmulHook mm;
    ggml_context * ctx;

    ggml_tensor * inp_patches = nullptr;   // [P*P*3, n_patch, n_batch] f32
    ggml_tensor * inp_pos = nullptr;       // [n_patch] i32 (PosEmbedding::buckets)
    ggml_tensor * inp_pos_embd = nullptr;  // [D, n_patch] f32 (PosEmbedding::resampled_grid)

    SiglipGraph(ggml_context * ctx, const VisionModel & model, int ph, int pw, int n_batch, MatmulHook mm);

    ggml_tensor * build();  // -> [D, n_patch, n_batch]

    // after allocation: pixels[b] is piece b as CHW floats of rh x rw patches; when that is fewer than the
    // graph's ph x pw (a padded strip), its patches come first in row-major order and the rest are zeros
    void set_inputs(const std::vector<const float *> & pixels, PosRule rule, int rh, int rw) const;
};

}  // namespace mcv
