#include "graphs/eva.h"

#include <stdexcept>

#include "graphs/siglip.h"

namespace mcv {

ggml_tensor * post_norm_block(ggml_context * ctx, ggml_tensor * x, const VisionLayer & L, const VisionHParams & hp,
                              int il, MatmulHook mm) {
    // the block input goes to each branch as it is; the LayerNorm is on the branch's output
    ggml_tensor * cur =
        cb(layer_norm(ctx, attention_branch(ctx, x, L, hp, il, mm), L.ln1_w, L.ln1_b, hp.eps), "ln1", il);
    x = cb(ggml_add(ctx, x, cur), "attn_residual", il);
    cur = cb(layer_norm(ctx, mlp_branch(ctx, x, L, hp, /*exact_gelu =*/true, il, mm), L.ln2_w, L.ln2_b, hp.eps), "ln2",
             il);
    return cb(ggml_add(ctx, x, cur), "ffn_residual", il);
}

EvaGraph::EvaGraph(ggml_context * ctx, const VisionModel & model, int ph, int pw, int n_batch, MatmulHook mm)
    : model(model), hp(model.hp), ph(ph), pw(pw), n_patch(ph * pw), n_batch(n_batch), mm(mm), ctx(ctx) {
    if (!model.class_embd || !model.class_pos) {
        throw std::invalid_argument(model.path + ": an EVA tower needs v.class_embd and v.class_position_embd");
    }
}

ggml_tensor * EvaGraph::build() {
    const int64_t D = hp.n_embd, P = hp.patch_size, N = n_patch, B = n_batch;

    inp_patches = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, P * P * 3, N, B);
    ggml_set_name(inp_patches, "inp_patches");
    ggml_set_input(inp_patches);
    inp_pos_embd = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, D, N);
    ggml_set_name(inp_pos_embd, "inp_pos_embd");
    ggml_set_input(inp_pos_embd);

    ggml_tensor * x = patch_embedding(ctx, model, inp_patches, inp_pos_embd, mm);  // [D, N, B]
    // the class token with its own position row, first in every piece
    ggml_tensor * cls = ggml_reshape_3d(ctx, ggml_add(ctx, model.class_embd, model.class_pos), D, 1, 1);
    if (B > 1) cls = ggml_repeat_4d(ctx, cls, D, 1, B, 1);
    x = cb(ggml_concat(ctx, cls, x, 1), "class_token", -1);  // [D, 1 + N, B]
    for (int il = 0; il < hp.n_layer; ++il) x = post_norm_block(ctx, x, model.layers[size_t(il)], hp, il, mm);
    x = cb(layer_norm(ctx, x, model.post_ln_w, model.post_ln_b, hp.eps), "post_ln", -1);
    // the patch tokens only
    x = ggml_view_3d(ctx, x, D, N, B, x->nb[1], x->nb[2], x->nb[1]);
    return cb(ggml_cont(ctx, x), "patch_tokens", -1);  // [D, N, B]
}

void EvaGraph::set_inputs(const std::vector<const float *> & pixels) const {
    set_patches(inp_patches, pixels, ph, pw, hp.patch_size);
    const std::vector<float> pos = resample_grid(model.pos_table, hp.pos_side, hp.n_embd, ph, pw);
    ggml_backend_tensor_set(inp_pos_embd, pos.data(), 0, pos.size() * sizeof(float));
}

}  // namespace mcv
