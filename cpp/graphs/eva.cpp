#include "graphs/eva.h"

#include <stdexcept>

#include "graphs/siglip.h"

namespace mcv {

ggml_tensor * post_norm_block(ggml_context * ctx, ggml_tensor * x, const VisionLayer & L, const VisionHParams & hp,
                              int il, MatmulHook mm) {
    const int64_t N = x->ne[1], B = x->ne[2], d_head = hp.n_embd / hp.n_head;
    // the block input goes to attention as it is; the LayerNorm is on the branch's output
    ggml_tensor * q = ggml_reshape_4d(ctx, linear(ctx, x, L.q_w, L.q_b, mm), d_head, hp.n_head, N, B);
    ggml_tensor * k = ggml_reshape_4d(ctx, linear(ctx, x, L.k_w, L.k_b, mm), d_head, hp.n_head, N, B);
    ggml_tensor * v = ggml_reshape_4d(ctx, linear(ctx, x, L.v_w, L.v_b, mm), d_head, hp.n_head, N, B);
    ggml_tensor * cur = attend(ctx, q, k, v, L.q_w->type == GGML_TYPE_F32 ? GGML_TYPE_F32 : GGML_TYPE_F16, il, mm);
    cur = cb(linear(ctx, cur, L.o_w, L.o_b, mm), "attn_out", il);
    cur = cb(layer_norm(ctx, cur, L.ln1_w, L.ln1_b, hp.eps), "ln1", il);
    x = cb(ggml_add(ctx, x, cur), "attn_residual", il);

    cur = cb(linear(ctx, x, L.fc1_w, L.fc1_b, mm), "ffn_up", il);  // [F, N, B]
    // on our int8 kernel the GELU is computed as fc2's activations are quantized (a third of the tower's time
    // otherwise, in ggml's erf)
    const bool fused = int8_packed(mm, L.fc2_w);
    if (!fused) cur = cb(gelu(ctx, cur, hp.gelu, /*exact =*/true), "ffn_gelu", il);
    cur = cb(linear(ctx, cur, L.fc2_w, L.fc2_b, mm, fused ? fused_gelu(hp.gelu) : InputAct::none), "ffn_down", il);
    cur = cb(layer_norm(ctx, cur, L.ln2_w, L.ln2_b, hp.eps), "ln2", il);
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

    ggml_tensor * pixels = inp_patches;
    if (hp.pixels_f16) {  // the original hands the tower its normalised pixels as float16
        pixels = ggml_cast(ctx, ggml_cast(ctx, pixels, GGML_TYPE_F16), GGML_TYPE_F32);
    }
    ggml_tensor * x = patch_embedding(ctx, model, pixels, inp_pos_embd, mm);  // [D, N, B]
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
    const size_t per_piece = size_t(hp.patch_size) * size_t(hp.patch_size) * 3 * size_t(n_patch);
    std::vector<float> buf(per_piece * size_t(n_batch));
    for (int b = 0; b < n_batch; ++b) patchify(pixels[size_t(b)], ph, pw, hp.patch_size, buf.data() + b * per_piece);
    ggml_backend_tensor_set(inp_patches, buf.data(), 0, buf.size() * sizeof(float));
    const std::vector<float> pos = resample_grid(model.pos_table, hp.pos_side, hp.n_embd, ph, pw);
    ggml_backend_tensor_set(inp_pos_embd, pos.data(), 0, pos.size() * sizeof(float));
}

}  // namespace mcv
