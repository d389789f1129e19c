#include "graphs/minicpmv4_6.h"

#include <stdexcept>
#include <string>

#include "graphs/graph_common.h"
#include "graphs/siglip.h"

namespace mcv {
namespace {

// x: [C, w, h, B], a row-major h x w grid per piece (contiguous) -> [4C, w/2, h/2, B]: each 2x2 block's tokens
// concatenated as (top-left, top-right, bottom-left, bottom-right), blocks in row-major order. This is both the
// insert merger's window reorder (transformers' get_vision_window_index with 2x2 windows on even grids) and the
// final merger's view(h/2, 2, w/2, 2, C).permute(0, 2, 1, 3, 4).
ggml_tensor * blocks_2x2(ggml_context * ctx, ggml_tensor * x, int64_t C, int64_t w, int64_t h, int64_t B) {
    x = ggml_reshape_4d(ctx, x, 2 * C, w / 2, 2, (h / 2) * B);  // column pairs; rows split into (h/2, 2)
    x = ggml_cont(ctx, ggml_permute(ctx, x, 0, 2, 1, 3));       // [2C, 2 (row in block), w/2, h/2 * B]
    return ggml_reshape_4d(ctx, x, 4 * C, w / 2, h / 2, B);
}

// Computes GELU exactly unless the weights are block-quantized: the fidelity of f16 files is the point of them,
// and ggml_gelu's f16 table moves the embeddings by ~1e-3 relative (the quantized files' own error is larger).
bool exact_gelu(const ggml_tensor * w) { return !block_quantized(w->type); }

// the final merger's LayerNorm: transformers' DownsampleMLP fixes its eps at 1e-6, whatever the tower's
constexpr float kMergerEps = 1e-6f;

ggml_type kv_type(const ggml_tensor * w) { return w->type == GGML_TYPE_F32 ? GGML_TYPE_F32 : GGML_TYPE_F16; }

}  // namespace

Minicpmv46Graph::Minicpmv46Graph(ggml_context * ctx, const VisionModel & model, int ph, int pw, int n_batch,
                                 int downsample, MatmulHook mm)
    : model(model), hp(model.hp), ph(ph), pw(pw), n_batch(n_batch), downsample(downsample), mm(mm), ctx(ctx) {
    if (hp.merger != Merger::minicpmv4_6) throw std::logic_error("Minicpmv46Graph: not a minicpmv4_6 file");
    if (downsample != kDownsample16x && downsample != kDownsample4x) {
        throw std::invalid_argument("minicpmv4_6: unknown downsample factor " + std::to_string(downsample));
    }
    if (downsample == kDownsample16x && !hp.has_insert_merger) {
        throw std::invalid_argument(model.path + ": 16x needs the insert merger, which this file does not have");
    }
    if (ph <= 0 || pw <= 0 || ph % downsample || pw % downsample) {
        throw std::invalid_argument("minicpmv4_6: a " + std::to_string(ph) + "x" + std::to_string(pw) +
                                    " patch grid is not a whole number of " + std::to_string(downsample) + "x" +
                                    std::to_string(downsample) + " blocks");
    }
}

ggml_tensor * Minicpmv46Graph::build() {
    const int64_t D = hp.n_embd, P = hp.patch_size, N = int64_t(ph) * pw, B = n_batch;
    const int64_t d_head = D / hp.n_head;

    inp_patches = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, P * P * 3, N, B);
    ggml_set_name(inp_patches, "inp_patches");
    ggml_set_input(inp_patches);
    inp_pos = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, N);
    ggml_set_name(inp_pos, "inp_pos");
    ggml_set_input(inp_pos);
    ggml_tensor * x = patch_embedding(ctx, model, inp_patches, ggml_get_rows(ctx, model.pos_embd, inp_pos), mm);

    int64_t gh = ph, gw = pw;  // the current token grid
    const bool merge = downsample == kDownsample16x;
    for (int il = 0; il < hp.n_layer; ++il) {
        const VisionLayer & L = model.layers[size_t(il)];
        x = siglip_block(ctx, x, L, hp, exact_gelu(L.fc1_w), il, mm);  // [D, gh * gw, B]
        if (!merge || il != hp.insert_layer) continue;

        // insert merger: tokens in 2x2 windows (window-major), attention within each window
        const int64_t n_win = (gh / 2) * (gw / 2) * B;
        ggml_tensor * xw = ggml_reshape_3d(ctx, blocks_2x2(ctx, x, D, gw, gh, B), D, 4, n_win);  // [D, 4, windows]
        const InputNorm wm_ln1{model.wm_ln_w, model.wm_ln_b, &hp.eps, "wm_ln1"};
        const auto qkv =
            linears(ctx, xw, {{model.wm_q_w, model.wm_q_b}, {model.wm_k_w, model.wm_k_b}, {model.wm_v_w, model.wm_v_b}},
                    mm, wm_ln1);
        ggml_tensor * q = ggml_reshape_4d(ctx, qkv[0], d_head, hp.n_head, 4, n_win);
        ggml_tensor * k = ggml_reshape_4d(ctx, qkv[1], d_head, hp.n_head, 4, n_win);
        ggml_tensor * v = ggml_reshape_4d(ctx, qkv[2], d_head, hp.n_head, 4, n_win);
        ggml_tensor * cur = attend(ctx, q, k, v, kv_type(model.wm_q_w), -1, mm);  // [D, 4, windows]: the batch
        cur = cb(linear(ctx, cur, model.wm_o_w, model.wm_o_b, mm), "wm_attn_out", -1);
        cur = cb(ggml_add(ctx, xw, cur), "wm_attn_residual", -1);  // the residual is the unnormalised x

        // each window's 4 tokens -> one: MLP over their concatenation plus their mean
        ggml_tensor * mean = nullptr;
        for (int64_t t = 0; t < 4; ++t) {
            ggml_tensor * tok = ggml_view_2d(ctx, cur, D, n_win, cur->nb[2], size_t(t) * cur->nb[1]);
            mean = mean ? ggml_add(ctx, mean, tok) : tok;
        }
        mean = cb(ggml_scale(ctx, mean, 0.25f), "wm_mean", -1);  // [D, windows]
        ggml_tensor * flat = ggml_reshape_2d(ctx, cur, 4 * D, n_win);
        const InputNorm wm_ds_ln{model.wm_ds_ln_w, model.wm_ds_ln_b, &hp.eps, "wm_ds_ln"};
        flat = cb(linear(ctx, flat, model.wm_ds_up_w, model.wm_ds_up_b, mm, InputAct::none, wm_ds_ln), "wm_ds_up",
                  -1);  // [4F, windows]
        flat = cb(gelu(ctx, flat, Gelu::tanh, exact_gelu(model.wm_ds_up_w)), "wm_ds_gelu", -1);
        flat = cb(linear(ctx, flat, model.wm_ds_down_w, model.wm_ds_down_b, mm), "wm_ds_down", -1);  // [D, windows]
        gh /= 2;
        gw /= 2;
        x = cb(ggml_reshape_3d(ctx, ggml_add(ctx, flat, mean), D, gh * gw, B), "wm_out", -1);  // window order
    }
    x = cb(layer_norm(ctx, x, model.post_ln_w, model.post_ln_b, hp.eps), "post_ln", -1);

    // final merger: 2x2 blocks of the current grid -> LayerNorm(4D) -> linear -> GELU (erf) -> linear
    const int64_t n_tok = (gh / 2) * (gw / 2);
    ggml_tensor * cur = ggml_reshape_3d(ctx, blocks_2x2(ctx, x, D, gw, gh, B), 4 * D, n_tok, B);
    const InputNorm mg_ln{model.mg_ln_w, model.mg_ln_b, &kMergerEps, "mg_ln"};
    cur = cb(linear(ctx, cur, model.mg_up_w, model.mg_up_b, mm, InputAct::none, mg_ln), "mg_up", -1);
    cur = cb(gelu(ctx, cur, Gelu::erf, true), "mg_gelu", -1);
    return cb(linear(ctx, cur, model.mg_down_w, model.mg_down_b, mm), "mg_down", -1);  // [E, n_tok, B]
}

void Minicpmv46Graph::set_inputs(const std::vector<const float *> & pixels, PosRule rule) const {
    set_patches(inp_patches, pixels, ph, pw, hp.patch_size);
    const std::vector<int32_t> ids = position_ids(ph, pw, hp.pos_side, rule);
    ggml_backend_tensor_set(inp_pos, ids.data(), 0, ids.size() * sizeof(int32_t));
}

}  // namespace mcv
