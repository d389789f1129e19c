#include "graphs/siglip.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <stdexcept>
#include <string>

#if (defined(__aarch64__) || defined(_M_ARM64)) && defined(__linux__)
#include <sys/auxv.h>
#include <sys/prctl.h>
#endif

#include "graphs/graph_common.h"
#include "preprocess/resize.h"

namespace mcv {
namespace {

// The float lanes of torch's vectorized CPU kernels on this machine, which torch.arange's rounding depends on:
// 8 on x86-64 (AVX2 / AVX-512 builds alike) and on ARM CPUs with 256-bit SVE (torch's SVE256 kernels), 4 on
// other ARM CPUs (its NEON kernels: Raspberry Pi, Apple silicon, SVE of another width). So the original gives
// other position ids on a Pi than on a PC (at 49 patches, for one), and we follow the platform we run on.
int64_t torch_float_lanes() {
#if defined(__aarch64__) || defined(_M_ARM64)
#if defined(__linux__) && defined(HWCAP_SVE)
    if (getauxval(AT_HWCAP) & HWCAP_SVE) {
        const int vl = prctl(PR_SVE_GET_VL);
        if (vl > 0 && (vl & PR_SVE_VL_LEN_MASK) == 32) return 8;
    }
#endif
    return 4;
#else
    return 8;
#endif
}

// torch.arange(start, end, step) in float32 as the original ran it (torch's CPU kernel): the count from
// doubles; blocks of 2 x L values from an L-lane vector kernel, where each lane is base + j * step with
// base = float(start + step * idx); the tail one value at a time as float(start + step * i). The rounding
// of these values decides the bucket at exact ratios (the original `modeling_navit_siglip.py`; on x86-64 at 25, 49,
// 50, 55, 58, 77, ... patches).
std::vector<float> arange_f32(double start, double end, double step) {
    const int64_t lanes = torch_float_lanes();
    const auto n = std::max<int64_t>(int64_t(std::ceil((end - start) / step)), 0);
    std::vector<float> out(static_cast<size_t>(n));
    const int64_t vec_end = n / (2 * lanes) * (2 * lanes);
    for (int64_t idx = 0; idx < vec_end; idx += lanes) {
        const float base = float(start + step * double(idx));
        for (int64_t j = 0; j < lanes; ++j) out[size_t(idx + j)] = float(double(base) + double(j) * step);
    }
    for (int64_t i = vec_end; i < n; ++i) out[size_t(i)] = float(start + step * double(i));
    return out;
}

// bucketize(frac, boundaries, right=True) for frac = arange(0, 1 - 1e-6, 1 / n) with 1 / n a float32 tensor
std::vector<int32_t> buckets(int n, const std::vector<float> & boundaries) {
    const float step = 1.0f / float(n);
    const std::vector<float> frac = arange_f32(0.0, 1.0 - 1e-6, double(step));
    std::vector<int32_t> out(frac.size());
    for (size_t i = 0; i < frac.size(); ++i) {
        int32_t c = 0;
        while (size_t(c) < boundaries.size() && boundaries[size_t(c)] <= frac[i]) ++c;
        out[i] = c;
    }
    return out;
}

// [n_out, n_in] row-normalised weights of resizing n_in samples to n_out: support 2 * max(scale, 1) around the
// centre scale * (i + 0.5), each tap weighted k((j - centre + 0.5) / max(scale, 1)) (float32, as torch)
std::vector<float> aa_bicubic_weights(int n_in, int n_out) {
    const float scale = float(n_in) / float(n_out);
    const float stretch = std::max(scale, 1.0f), support = 2.0f * stretch;
    std::vector<float> w(size_t(n_out) * size_t(n_in), 0.0f);
    for (int i = 0; i < n_out; ++i) {
        const float centre = scale * (float(i) + 0.5f);
        const int lo = std::max(int(centre - support + 0.5f), 0), hi = std::min(int(centre + support + 0.5f), n_in);
        float total = 0.0f;
        for (int j = lo; j < hi; ++j)
            total +=
                (w[size_t(i) * size_t(n_in) + size_t(j)] = float(cubic_kernel((float(j) - centre + 0.5f) / stretch)));
        for (int j = lo; j < hi && total != 0.0f; ++j) w[size_t(i) * size_t(n_in) + size_t(j)] /= total;
    }
    return w;
}

// bucketize(float32(i) / float32(n), boundaries, right=True) for i < n: transformers 5.x
// get_vision_nearest_position_ids (arange(n) / n, an int tensor divided in float32)
std::vector<int32_t> ratio_buckets(int n, const std::vector<float> & boundaries) {
    std::vector<int32_t> out(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
        const float frac = float(i) / float(n);
        out[size_t(i)] = int32_t(std::upper_bound(boundaries.begin(), boundaries.end(), frac) - boundaries.begin());
    }
    return out;
}

}  // namespace

// SigLIP's tanh approximation (gelu_pytorch_tanh) or timm's exact erf form. ggml_gelu reads a table indexed
// by the f16-rounded input on the CPU (about 1e-3 relative error); f32 weights ask for fidelity, so the tanh form
// is then the formula itself: x * sigmoid(2 * sqrt(2 / pi) * (x + 0.044715 x^3)). ggml_gelu_erf is exact in f32.
ggml_tensor * gelu(ggml_context * ctx, ggml_tensor * x, Gelu kind, bool exact) {
    if (kind == Gelu::erf) return ggml_gelu_erf(ctx, x);
    if (!exact) return ggml_gelu(ctx, x);
    const float c = 1.5957691216057308f;                                         // 2 sqrt(2/pi)
    ggml_tensor * t = ggml_scale_bias(ctx, ggml_sqr(ctx, x), 0.044715f * c, c);  // c (1 + 0.044715 x^2)
    t = ggml_mul(ctx, t, x);                                                     // c (x + 0.044715 x^3)
    return ggml_mul(ctx, x, ggml_sigmoid(ctx, t));
}

std::vector<int32_t> position_ids(int h, int w, int side, PosRule rule) {
    if (h <= 0 || w <= 0 || side <= 0) throw std::invalid_argument("position_ids: sizes must be positive");
    std::vector<int32_t> bh(static_cast<size_t>(h)), bw(static_cast<size_t>(w));
    if (rule == PosRule::floor_2d) {
        for (int i = 0; i < h; ++i) bh[size_t(i)] = int32_t(int64_t(side) * i / h);
        for (int j = 0; j < w; ++j) bw[size_t(j)] = int32_t(int64_t(side) * j / w);
    } else {
        const std::vector<float> boundaries = arange_f32(1.0 / side, 1.0, 1.0 / side);
        if (rule == PosRule::navit_2d) {
            bh = buckets(h, boundaries);
            bw = buckets(w, boundaries);
        } else if (rule == PosRule::nearest_2d) {
            bh = ratio_buckets(h, boundaries);
            bw = ratio_buckets(w, boundaries);
        } else {  // flat_1d: one row of h * w patches
            const int64_t n = int64_t(h) * w;
            if (n > INT32_MAX) throw std::invalid_argument("position_ids: piece of " + std::to_string(n) + " patches");
            std::vector<int32_t> flat = buckets(int(n), boundaries);
            // float32 arange yields n values up to about 10^6 patches; past that the original fails (its ids do
            // not fill the piece): refuse rather than read past the end
            if (int64_t(flat.size()) < n) {
                throw std::invalid_argument("position_ids: a piece of " + std::to_string(n) +
                                            " patches is beyond the 1-D position rule (float32 arange gives " +
                                            std::to_string(flat.size()) + " values)");
            }
            flat.resize(size_t(n));
            return flat;
        }
    }
    if (int(bh.size()) != h || int(bw.size()) != w) throw std::logic_error("position_ids: bucket count mismatch");
    std::vector<int32_t> ids(size_t(h) * size_t(w));
    for (int i = 0; i < h; ++i) {
        for (int j = 0; j < w; ++j) ids[size_t(i) * size_t(w) + size_t(j)] = bh[size_t(i)] * side + bw[size_t(j)];
    }
    return ids;
}

std::vector<float> resample_grid(const std::vector<float> & table, int side, int dim, int h, int w) {
    if (h <= 0 || w <= 0 || side <= 0 || table.size() != size_t(side) * size_t(side) * size_t(dim)) {
        throw std::invalid_argument("resample_grid: bad sizes");
    }
    if (h == side && w == side) return table;
    const std::vector<float> wx = aa_bicubic_weights(side, w), wy = aa_bicubic_weights(side, h);
    // along the width first: [side rows, w, dim]
    std::vector<float> mid(size_t(side) * size_t(w) * size_t(dim), 0.0f);
    for (int r = 0; r < side; ++r) {
        for (int c = 0; c < w; ++c) {
            float * o = mid.data() + (size_t(r) * size_t(w) + size_t(c)) * size_t(dim);
            for (int j = 0; j < side; ++j) {
                const float k = wx[size_t(c) * size_t(side) + size_t(j)];
                if (k == 0.0f) continue;
                const float * in = table.data() + (size_t(r) * size_t(side) + size_t(j)) * size_t(dim);
                for (int d = 0; d < dim; ++d) o[d] += k * in[d];
            }
        }
    }
    std::vector<float> out(size_t(h) * size_t(w) * size_t(dim), 0.0f);
    for (int r = 0; r < h; ++r) {
        for (int i = 0; i < side; ++i) {
            const float k = wy[size_t(r) * size_t(side) + size_t(i)];
            if (k == 0.0f) continue;
            for (int c = 0; c < w; ++c) {
                float * o = out.data() + (size_t(r) * size_t(w) + size_t(c)) * size_t(dim);
                const float * in = mid.data() + (size_t(i) * size_t(w) + size_t(c)) * size_t(dim);
                for (int d = 0; d < dim; ++d) o[d] += k * in[d];
            }
        }
    }
    return out;
}

void patchify(const float * chw, int h, int w, int patch, float * out) {
    const size_t W = size_t(w) * size_t(patch), plane = W * size_t(h) * size_t(patch);
    const size_t per_patch = size_t(patch) * size_t(patch) * 3;
    for (int py = 0; py < h; ++py) {
        for (int px = 0; px < w; ++px) {
            float * o = out + (size_t(py) * size_t(w) + size_t(px)) * per_patch;
            for (int c = 0; c < 3; ++c) {
                for (int ky = 0; ky < patch; ++ky) {
                    const float * row = chw + size_t(c) * plane + (size_t(py) * size_t(patch) + size_t(ky)) * W +
                        size_t(px) * size_t(patch);
                    for (int kx = 0; kx < patch; ++kx) *o++ = row[kx];
                }
            }
        }
    }
}

ggml_tensor * patch_embedding(ggml_context * ctx, const VisionModel & model, ggml_tensor * patches, ggml_tensor * pos,
                              MatmulHook mm) {
    const int64_t D = model.hp.n_embd, P = model.hp.patch_size;
    if (model.hp.pixels_f16) {  // (OmniLMM's original hands its tower the normalised pixels as float16)
        patches = ggml_cast(ctx, ggml_cast(ctx, patches, GGML_TYPE_F16), GGML_TYPE_F32);
    }
    // the stride-P, kernel-P conv is a matmul over non-overlapping patches
    ggml_tensor * kernel = ggml_reshape_2d(ctx, model.patch_w, P * P * 3, D);                 // [P*P*3, D]
    ggml_tensor * x = cb(linear(ctx, patches, kernel, model.patch_b, mm), "patch_embd", -1);  // [D, N, B]
    return cb(ggml_add(ctx, x, pos), "pos_embd", -1);                                         // + [D, N]
}

ggml_tensor * attention_branch(ggml_context * ctx, ggml_tensor * x, const VisionLayer & L, const VisionHParams & hp,
                               int il, MatmulHook mm, const InputNorm & norm) {
    const int64_t N = x->ne[1], B = x->ne[2], d_head = hp.n_embd / hp.n_head;
    const auto qkv = linears(ctx, x, {{L.q_w, L.q_b}, {L.k_w, L.k_b}, {L.v_w, L.v_b}}, mm, norm);  // (one quantization)
    ggml_tensor * q = ggml_reshape_4d(ctx, qkv[0], d_head, hp.n_head, N, B);
    ggml_tensor * k = ggml_reshape_4d(ctx, qkv[1], d_head, hp.n_head, N, B);
    ggml_tensor * v = ggml_reshape_4d(ctx, qkv[2], d_head, hp.n_head, N, B);
    ggml_tensor * cur =
        attend(ctx, q, k, v, L.q_w->type == GGML_TYPE_F32 ? GGML_TYPE_F32 : GGML_TYPE_F16, il, mm);  // [D, N, B]
    return cb(linear(ctx, cur, L.o_w, L.o_b, mm), "attn_out", il);
}

ggml_tensor * mlp_branch(ggml_context * ctx, ggml_tensor * x, const VisionLayer & L, const VisionHParams & hp,
                         bool exact_gelu, int il, MatmulHook mm, const InputNorm & norm) {
    ggml_tensor * cur = cb(linear(ctx, x, L.fc1_w, L.fc1_b, mm, InputAct::none, norm), "ffn_up", il);  // [F, N, B]
    // on our int8 kernel the GELU is computed as fc2's activations are quantized: no pass of its own
    const bool fused = int8_packed(mm, L.fc2_w);
    if (!fused) cur = cb(gelu(ctx, cur, hp.gelu, exact_gelu), "ffn_gelu", il);
    return cb(linear(ctx, cur, L.fc2_w, L.fc2_b, mm, fused ? fused_gelu(hp.gelu) : InputAct::none), "ffn_down", il);
}

ggml_tensor * siglip_block(ggml_context * ctx, ggml_tensor * x, const VisionLayer & L, const VisionHParams & hp,
                           bool exact_gelu, int il, MatmulHook mm) {
    // (the norms fused into the products' quantization where those run on our int8 kernel)
    const InputNorm ln1{L.ln1_w, L.ln1_b, &hp.eps, "ln1", il}, ln2{L.ln2_w, L.ln2_b, &hp.eps, "ln2", il};
    x = cb(ggml_add(ctx, x, attention_branch(ctx, x, L, hp, il, mm, ln1)), "attn_residual", il);  // [D, N, B]
    return cb(ggml_add(ctx, x, mlp_branch(ctx, x, L, hp, exact_gelu, il, mm, ln2)), "ffn_residual", il);
}

SiglipGraph::SiglipGraph(ggml_context * ctx, const VisionModel & model, int ph, int pw, int n_batch, MatmulHook mm)
    : model(model), hp(model.hp), ph(ph), pw(pw), n_patch(ph * pw), n_batch(n_batch),
      d_head(model.hp.n_embd / model.hp.n_head), mm(mm), ctx(ctx) {}

ggml_tensor * SiglipGraph::build() {
    const int64_t D = hp.n_embd, P = hp.patch_size, N = n_patch, B = n_batch;

    inp_patches = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, P * P * 3, N, B);
    ggml_set_name(inp_patches, "inp_patches");
    ggml_set_input(inp_patches);
    ggml_tensor * pos = nullptr;  // [D, N]
    if (hp.pos_embedding == PosEmbedding::resampled_grid) {
        inp_pos_embd = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, D, N);
        ggml_set_name(inp_pos_embd, "inp_pos_embd");
        ggml_set_input(inp_pos_embd);
        pos = inp_pos_embd;
    } else {
        inp_pos = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, N);
        ggml_set_name(inp_pos, "inp_pos");
        ggml_set_input(inp_pos);
        pos = ggml_get_rows(ctx, model.pos_embd, inp_pos);
    }

    ggml_tensor * x = patch_embedding(ctx, model, inp_patches, pos, mm);  // [D, N, B]
    for (int il = 0; il < hp.n_layer; ++il) {
        const VisionLayer & L = model.layers[size_t(il)];
        x = siglip_block(ctx, x, L, hp, /*exact_gelu =*/L.fc1_w->type == GGML_TYPE_F32, il, mm);
    }
    return cb(layer_norm(ctx, x, model.post_ln_w, model.post_ln_b, hp.eps), "post_ln", -1);  // [D, N, B]
}

void set_patches(ggml_tensor * inp_patches, const std::vector<const float *> & pixels, int h, int w, int patch) {
    const int64_t n_patch = inp_patches->ne[1], n_batch = inp_patches->ne[2];
    if (int64_t(h) * w > n_patch || int64_t(pixels.size()) != n_batch) {
        throw std::invalid_argument("set_patches: the pieces do not fit the graph's patch input");
    }
    const size_t per_piece = size_t(inp_patches->ne[0]) * size_t(n_patch);
    std::vector<float> buf(per_piece * size_t(n_batch), 0.0f);  // padding: zero pixels (the original's pad value)
    for (size_t b = 0; b < pixels.size(); ++b) patchify(pixels[b], h, w, patch, buf.data() + b * per_piece);
    ggml_backend_tensor_set(inp_patches, buf.data(), 0, buf.size() * sizeof(float));
}

void SiglipGraph::set_inputs(const std::vector<const float *> & pixels, PosRule rule, int rh, int rw) const {
    set_patches(inp_patches, pixels, rh, rw, hp.patch_size);
    if (inp_pos_embd) {
        const std::vector<float> pos = resample_grid(model.pos_table, hp.pos_side, hp.n_embd, ph, pw);
        ggml_backend_tensor_set(inp_pos_embd, pos.data(), 0, pos.size() * sizeof(float));
    } else {
        const std::vector<int32_t> ids = position_ids(ph, pw, hp.pos_side, rule);
        ggml_backend_tensor_set(inp_pos, ids.data(), 0, ids.size() * sizeof(int32_t));
    }
}

}  // namespace mcv
