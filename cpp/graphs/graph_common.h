// Blocks shared by the SigLIP and resampler graph builders. Weights are passed explicitly; a null bias is absent.
// Shapes are in ggml order (ne0 first).
#pragma once

#include <cmath>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "ggml.h"
#include "kernels/blas_ops.h"
#include "kernels/int8_attention.h"
#include "kernels/int8_gemm.h"
#include "runtime/mmproj.h"

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

// A LayerNorm on a product's input (linear(), linears()): where the products run on our int8 kernel it is computed
// as the rows are quantized (op "quantize <name>-<il>", no norm nodes); elsewhere it is layer_norm(), named
// "<name>-<il>". eps must outlive the graph (the model's own: the kernel reads it when the graph runs).
struct InputNorm {
    ggml_tensor * w = nullptr;
    ggml_tensor * b = nullptr;
    const float * eps = nullptr;
    const char * name = "norm";
    int il = -1;
};

// x itself, or x under `norm` (layer_norm, named) where it has one
inline ggml_tensor * normed(ggml_context * ctx, ggml_tensor * x, const InputNorm & norm) {
    return norm.w ? cb(layer_norm(ctx, x, norm.w, norm.b, *norm.eps), norm.name, norm.il) : x;
}

// How matrix products are computed: ggml's own kernels (any backend, any weight type), or OpenBLAS on the CPU
// (with the owner's scratch memory).
// `packed` weights run on our int8 kernel (int8_gemm.h: AVX512-VNNI, AVX2 or NEON). Otherwise, with `int8`,
// block-quantized weights (q8_0, q4_0, k-quants) stay on ggml's CPU kernels, which quantize the activations per block
// and multiply on integer dot products (VNNI, DOTPROD, I8MM): faster than dequantizing for sgemm where the CPU has
// them. `attention` names our int8 kernel that runs attention (int8_attention.h) where it takes the shape and has at
// least `attention_min_queries` query rows (packing the keys and values costs about as much as 100 query rows'
// products: the resampler's 64 queries are faster in f32); none: f32.
struct MatmulHook {
    BlasScratch * blas = nullptr;
    bool int8 = false;
    const PackedWeights * packed = nullptr;
    Int8Isa attention = Int8Isa::none;
    int64_t attention_min_queries = 1;
};

// whether `w` runs on our int8 kernel, which can take GELU into its input (linear's `act`)
inline bool int8_packed(const MatmulHook & mm, const ggml_tensor * w) { return mm.packed && mm.packed->find(w); }

// the product y of w, named after it ("x <w>"), plus the bias b: added by our int8 kernel as it stored y where
// `fused` (y is then returned as a free view for the caller to name: the product keeps its name), else by ggml_add
inline ggml_tensor * with_bias(ggml_context * ctx, ggml_tensor * y, const ggml_tensor * w, ggml_tensor * b,
                               const ggml_tensor * fused) {
    ggml_format_name(y, "x %s", w->name);
    if (fused) return ggml_reshape(ctx, y, y);
    return b ? ggml_add(ctx, y, b) : y;
}

// the norm our int8 kernel computes as it quantizes `x` for `packed` (none: no norm, or one it cannot take)
inline RowNorm fusable_norm(const InputNorm & norm, const PackedWeight & packed) {
    const RowNorm rn{norm.w, norm.b, norm.eps};
    return norm.w && int8_fusable_norm(rn, packed) ? rn : RowNorm{};
}

// the quantization of x's rows for `packed` (with `norm` where the kernel takes it), named after the norm or x
inline ggml_tensor * quantized(ggml_context * ctx, ggml_tensor * x, const PackedWeight & packed, InputAct act,
                               const RowNorm & fused, const InputNorm & norm, const char * shared) {
    ggml_tensor * q = int8_quantize(ctx, x, packed, act, fused);
    if (fused.w && norm.il >= 0) {
        ggml_format_name(q, "quantize %s%s-%d", shared, norm.name, norm.il);
    } else {
        ggml_format_name(q, "quantize %s%s", shared, fused.w ? norm.name : x->name);
    }
    return q;
}

// x: [in, ...], w: [in, out] -> [out, ...]; `act` (only where int8_packed): w times act(x), fused into the int8
// kernel's quantization of x; `norm`: w times norm(x) (see InputNorm). On our int8 kernel an f32 bias is added as
// the product is stored.
inline ggml_tensor * linear(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b, MatmulHook mm = {},
                            InputAct act = InputAct::none, const InputNorm & norm = {}) {
    const PackedWeight * packed = mm.packed ? mm.packed->find(w) : nullptr;
    if (act != InputAct::none && !packed)
        throw std::logic_error(std::string("linear: GELU fused into a product not ours: ") + w->name);
    const RowNorm fused = packed ? fusable_norm(norm, *packed) : RowNorm{};
    if (!fused.w) x = normed(ctx, x, norm);
    const bool blas = !packed && mm.blas && blas_supports(w) && !(mm.int8 && block_quantized(w->type));
    ggml_tensor * fused_bias = packed && int8_fusable_bias(b, *packed) ? b : nullptr;
    x = packed ? int8_product(ctx, quantized(ctx, x, *packed, act, fused, norm, ""), x, *packed, fused_bias)
        : blas ? blas_linear(ctx, x, w, *mm.blas)
               : ggml_mul_mat(ctx, w, x);
    return with_bias(ctx, x, w, b, fused_bias);
}

// x (or norm(x): InputNorm) times each weight (with its bias): products of one input, as attention's q, k and v.
// Where all of them run on our int8 kernel with the same layout, x is quantized once for all (op "quantize shared
// <x>", or "quantize shared <norm>-<il>") instead of once per product; otherwise each is linear().
inline std::vector<ggml_tensor *> linears(ggml_context * ctx, ggml_tensor * x,
                                          const std::vector<std::pair<ggml_tensor *, ggml_tensor *>> & wb,
                                          MatmulHook mm = {}, const InputNorm & norm = {}) {
    std::vector<const PackedWeight *> packed;
    for (const auto & [w, b] : wb) {
        const PackedWeight * p = mm.packed ? mm.packed->find(w) : nullptr;
        if (!p || (!packed.empty() && !int8_shares_quantized(*packed[0], *p))) {
            packed.clear();
            break;
        }
        packed.push_back(p);
    }
    std::vector<ggml_tensor *> out;
    const RowNorm fused = packed.empty() ? RowNorm{} : fusable_norm(norm, *packed[0]);
    if (!fused.w) x = normed(ctx, x, norm);  // (once, for every product)
    if (packed.empty()) {
        for (const auto & [w, b] : wb) out.push_back(linear(ctx, x, w, b, mm));
        return out;
    }
    ggml_tensor * q = quantized(ctx, x, *packed[0], InputAct::none, fused, norm, "shared ");
    for (size_t i = 0; i < wb.size(); ++i) {
        const auto & [w, b] = wb[i];
        ggml_tensor * fused_bias = int8_fusable_bias(b, *packed[i]) ? b : nullptr;
        out.push_back(with_bias(ctx, int8_product(ctx, q, x, *packed[i], fused_bias), w, b, fused_bias));
    }
    return out;
}

// Multi-head attention without a mask: our fused int8 attention, OpenBLAS in tiles of query rows, or ggml's fused
// flash attention (none keeps an n_q x n_kv score matrix in memory).
// q: [d_head, n_head, n_q, B] (B may be 1 on our paths: shared queries), k and v: [d_head, n_head, n_kv, B]
// -> [d_head * n_head, n_q, B]
inline ggml_tensor * attend(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, ggml_type kv_type,
                            int il, MatmulHook mm = {}) {
    if (mm.attention != Int8Isa::none && q->ne[2] >= mm.attention_min_queries &&
        int8_attention_supports(mm.attention, q->ne[0], k->ne[2])) {
        ggml_tensor * out = int8_attention(ctx, q, k, v, mm.attention);
        cb(out->src[1], "attn-pack", il);  // the packed keys and values (profiled as attention)
        return cb(out, "attn", il);
    }
    if (mm.blas) return cb(blas_attention(ctx, q, k, v, *mm.blas), "attn", il);
    const int64_t d_head = q->ne[0], n_head = q->ne[1], n_q = q->ne[2], batch = q->ne[3];
    q = ggml_permute(ctx, q, 0, 2, 1, 3);  // [d_head, n_q, n_head, B]
    k = ggml_permute(ctx, k, 0, 2, 1, 3);  // [d_head, n_kv, n_head, B]
    v = ggml_permute(ctx, v, 0, 2, 1, 3);
    if (kv_type != GGML_TYPE_F32) {
        k = ggml_cast(ctx, k, kv_type);
        v = ggml_cast(ctx, v, kv_type);
    } else {
        k = ggml_cont(ctx, k);
        v = ggml_cont(ctx, v);
    }
    ggml_tensor * out = ggml_flash_attn_ext(ctx, q, k, v, nullptr, 1.0f / std::sqrt(float(d_head)), 0.0f, 0.0f);
    ggml_prec_set_acc(out, GGML_PREC_F32);  // f32 accumulation
    cb(out, "attn", il);                    // [d_head, n_head, n_q, B]
    return ggml_reshape_3d(ctx, out, d_head * n_head, n_q, batch);
}

}  // namespace mcv
