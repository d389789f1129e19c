// OmniLMM-12B's EVA02-CLIP-E/14+ tower as a ggml graph (timm 0.9.10 `Eva` with `use_post_norm`, as the original
// OmniLMM code builds it): patch embedding, a class token, learned positions (the table the converter resized to the
// square's grid), residual post-norm blocks (x + LN(attn(x)), x + LN(mlp(x))) with exact GELU and no k bias, a final
// LayerNorm over every token, then the class token dropped. One graph encodes B pieces of the same patch grid.
#pragma once

#include <vector>

#include "graphs/graph_common.h"
#include "runtime/mmproj.h"

namespace mcv {

// one residual post-norm block: x [D, N, B] -> [D, N, B]
ggml_tensor * post_norm_block(ggml_context * ctx, ggml_tensor * x, const VisionLayer & L, const VisionHParams & hp,
                              int il, MatmulHook mm);

struct EvaGraph {
    const VisionModel & model;
    const VisionHParams & hp;
    const int ph, pw;   // patch grid of every piece in the batch
    const int n_patch;  // ph * pw
    const int n_batch;  // pieces encoded together
    const MatmulHook mm;
    ggml_context * ctx;

    ggml_tensor * inp_patches = nullptr;   // [P*P*3, n_patch, n_batch] f32
    ggml_tensor * inp_pos_embd = nullptr;  // [D, n_patch] f32: the position table at the piece's grid

    EvaGraph(ggml_context * ctx, const VisionModel & model, int ph, int pw, int n_batch, MatmulHook mm);

    ggml_tensor * build();  // -> [D, n_patch, n_batch]: the patch tokens, without the class token

    // after allocation: pixels[b] is piece b as CHW floats of ph x pw patches
    void set_inputs(const std::vector<const float *> & pixels) const;
};

}  // namespace mcv
