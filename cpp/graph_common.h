// Blocks shared by the SigLIP and resampler graph builders. Weights are passed explicitly; a null bias is absent.
// Shapes are in ggml order (ne0 first).
#pragma once

#include <cmath>
#include <string>

#include "ggml.h"

namespace mcv {

// name a node "<name>-<layer>" (or "<name>" when il < 0), for profiles and debugging
inline ggml_tensor * cb(ggml_tensor * t, const char * name, int il) {
    if (il >= 0) {
        ggml_format_name(t, "%s-%d", name, il);
    } else {
        ggml_set_name(t, name);
    }
    return t;
}

// x: [n, ...] -> (x - mean) / sqrt(var + eps) * w + b over ne0
inline ggml_tensor * layer_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b, float eps) {
    x = ggml_norm(ctx, x, eps);
    x = ggml_mul(ctx, x, w);
    return b ? ggml_add(ctx, x, b) : x;
}

// x: [in, ...], w: [in, out] -> [out, ...]
inline ggml_tensor * linear(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) {
    x = ggml_mul_mat(ctx, w, x);
    return b ? ggml_add(ctx, x, b) : x;
}

// Multi-head attention without a mask, in f32.
// q: [d_head, n_head, n_q, B], k and v: [d_head, n_head, n_kv, B] -> [d_head * n_head, n_q, B]
inline ggml_tensor * attend(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, int il) {
    const int64_t d_head = q->ne[0], n_head = q->ne[1], n_q = q->ne[2], batch = q->ne[3];
    q = ggml_permute(ctx, q, 0, 2, 1, 3);                       // [d_head, n_q, n_head, B]
    k = ggml_permute(ctx, k, 0, 2, 1, 3);                       // [d_head, n_kv, n_head, B]
    ggml_tensor * kq = cb(ggml_mul_mat(ctx, k, q), "kq", il);   // [n_kv, n_q, n_head, B]
    kq = cb(ggml_soft_max_ext(ctx, kq, nullptr, 1.0f / std::sqrt(float(d_head)), 0.0f), "kq_soft_max", il);
    ggml_tensor * vt = ggml_cont(ctx, ggml_permute(ctx, v, 1, 2, 0, 3));  // [n_kv, d_head, n_head, B]
    ggml_tensor * kqv = cb(ggml_mul_mat(ctx, vt, kq), "kqv", il);         // [d_head, n_q, n_head, B]
    kqv = ggml_permute(ctx, kqv, 0, 2, 1, 3);                             // [d_head, n_head, n_q, B]
    return ggml_cont_3d(ctx, kqv, d_head * n_head, n_q, batch);           // [d_head * n_head, n_q, B]
}

}  // namespace mcv
