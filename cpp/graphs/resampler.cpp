#include "graphs/resampler.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "graphs/graph_common.h"

namespace mcv {

std::vector<float> sincos_2d(int dim, int h, int w) {
    const int q = dim / 4;
    std::vector<float> omega(static_cast<size_t>(q));
    for (int k = 0; k < q; ++k) {
        const float e = float(k) / float(dim / 4.0);
        omega[size_t(k)] = 1.0f / std::pow(10000.0f, e);
    }
    std::vector<float> out(size_t(h) * size_t(w) * size_t(dim));
    for (int r = 0; r < h; ++r) {
        for (int c = 0; c < w; ++c) {
            float * o = out.data() + (size_t(r) * size_t(w) + size_t(c)) * size_t(dim);
            for (int k = 0; k < q; ++k) {
                const float tc = float(c) * omega[size_t(k)], tr = float(r) * omega[size_t(k)];
                o[k] = std::sin(tc);
                o[q + k] = std::cos(tc);
                o[2 * q + k] = std::sin(tr);
                o[3 * q + k] = std::cos(tr);
            }
        }
    }
    return out;
}

std::vector<float> sincos_temporal(int dim, int t) {
    const int half = dim / 2;
    std::vector<float> out(size_t(dim), 0.0f);
    if (t < 0) return out;
    for (int k = 0; k < half; ++k) {
        const float e = float(k) / float(dim / 2.0);
        const float omega = 1.0f / std::pow(10000.0f, e);
        const float a = float(t) * omega;
        out[size_t(k)] = std::sin(a);
        out[size_t(half + k)] = std::cos(a);
    }
    return out;
}

ResamplerGraph::ResamplerGraph(ggml_context * ctx, const VisionModel & model, int ph, int pw, int n_batch,
                               MatmulHook mm, int n_frames)
    : model(model), hp(model.hp), ph(ph), pw(pw), n_frames(n_frames), n_patch(ph * pw * std::max(n_frames, 1)),
      n_batch(n_batch), n_head(model.hp.resampler_heads()), mm(mm), ctx(ctx) {
    if (n_frames > 0 && model.key_pos) {
        throw std::invalid_argument(model.path + ": packed frames need sin-cos key positions, not a stored table");
    }
    if (model.key_pos && int64_t(n_patch) != model.key_pos->ne[1]) {
        throw std::invalid_argument(model.path + ": a " + std::to_string(ph) + "x" + std::to_string(pw) +
                                    " piece does not fit the stored key positions (" +
                                    std::to_string(model.key_pos->ne[1]) + " patches)");
    }
}

ggml_tensor * ResamplerGraph::build(ggml_tensor * x) {
    const int64_t E = hp.n_out, Q = hp.n_query, N = n_patch, B = n_batch, dh = E / n_head;

    ggml_tensor * key_pos = model.key_pos;  // a stored table, or the piece's sin-cos code (set_inputs)
    if (!key_pos) {
        key_pos = inp_pos = n_frames > 0 ? ggml_new_tensor_3d(ctx, GGML_TYPE_F32, E, N, B)  // per packed unit
                                         : ggml_new_tensor_2d(ctx, GGML_TYPE_F32, E, N);
        ggml_set_name(inp_pos, "inp_sincos");
        ggml_set_input(inp_pos);
    }

    ggml_tensor * kv = cb(linear(ctx, x, model.kv_w, nullptr, mm), "rs_kv", -1);  // [E, N, B]
    kv = cb(layer_norm(ctx, kv, model.ln_kv_w, model.ln_kv_b, hp.eps), "rs_ln_kv", -1);
    ggml_tensor * keys = cb(ggml_add(ctx, kv, key_pos), "rs_keys", -1);  // + [E, N] or [E, N, B]
    ggml_tensor * q0 = cb(layer_norm(ctx, model.query, model.ln_q_w, model.ln_q_b, hp.eps), "rs_ln_q", -1);  // [E, Q]
    if (model.query_pos) q0 = cb(ggml_add(ctx, q0, model.query_pos), "rs_q_pos", -1);  // a stored query table

    ggml_tensor * q = linear(ctx, q0, model.attn_q_w, model.attn_q_b, mm);  // [E, Q]
    q = ggml_reshape_4d(ctx, q, dh, n_head, Q, 1);
    if (B > 1 && !mm.blas) q = ggml_repeat_4d(ctx, q, dh, n_head, Q, B);  // shared queries (the BLAS op broadcasts)
    ggml_tensor * k = ggml_reshape_4d(ctx, linear(ctx, keys, model.attn_k_w, model.attn_k_b, mm), dh, n_head, N, B);
    ggml_tensor * v = ggml_reshape_4d(ctx, linear(ctx, kv, model.attn_v_w, model.attn_v_b, mm), dh, n_head, N, B);
    const ggml_type kv_type = model.attn_q_w->type == GGML_TYPE_F32 ? GGML_TYPE_F32 : GGML_TYPE_F16;
    ggml_tensor * cur = attend(ctx, q, k, v, kv_type, -1, mm);  // [E, Q, B]
    cur = cb(linear(ctx, cur, model.attn_o_w, model.attn_o_b, mm), "rs_attn_out", -1);
    const InputNorm ln_post{model.ln_post_w, model.ln_post_b, &hp.eps, "rs_ln_post"};
    return cb(linear(ctx, cur, model.proj_w, nullptr, mm, InputAct::none, ln_post), "rs_proj", -1);  // [E, Q, B]
}

void ResamplerGraph::set_inputs(const std::vector<int> & temporal_ids) const {
    if (!inp_pos) return;
    const std::vector<float> pos = sincos_2d(hp.n_out, ph, pw);
    if (n_frames == 0) {
        ggml_backend_tensor_set(inp_pos, pos.data(), 0, pos.size() * sizeof(float));
        return;
    }
    if (temporal_ids.size() != size_t(n_frames) * size_t(n_batch)) {
        throw std::invalid_argument("packed resampler: " + std::to_string(temporal_ids.size()) + " temporal ids for " +
                                    std::to_string(n_batch) + " units of " + std::to_string(n_frames) + " frames");
    }
    // frame by frame: its 2-D code plus its temporal code on every one of its rows (the keys only; values carry
    // neither), frames of a unit one after another, units one after another
    const size_t E = size_t(hp.n_out), frame = pos.size();
    std::vector<float> rows(frame);
    for (size_t f = 0; f < temporal_ids.size(); ++f) {
        const std::vector<float> t = sincos_temporal(hp.n_out, temporal_ids[f]);
        for (size_t i = 0; i < frame; ++i) rows[i] = pos[i] + t[i % E];
        ggml_backend_tensor_set(inp_pos, rows.data(), f * frame * sizeof(float), frame * sizeof(float));
    }
}

}  // namespace mcv
