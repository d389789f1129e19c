// MiniCPM-V's perceiver resampler as a ggml graph (the original `resampler.py`; llama.cpp's `models/minicpmv.cpp`
// builds the same): Q learned queries cross-attend to the vision features of one piece, whose keys carry a 2-D sin-cos
// position code (or a stored table: MiniCPM-V 1.0); E // 128 heads; then LayerNorm and the output projection.
#pragma once

#include <vector>

#include "graphs/graph_common.h"
#include "runtime/mmproj.h"

namespace mcv {

// [h * w, dim] row-major: per patch (row r, col c), channels [sin c*w_k, cos c*w_k, sin r*w_k, cos r*w_k],
// w_k = 10000^(-k / (dim / 4)), computed in float32 as the original (numpy) does
std::vector<float> sincos_2d(int dim, int h, int w);

struct ResamplerGraph {
    const VisionModel & model;
    const VisionHParams & hp;
    const int ph, pw, n_patch, n_batch;
    const int n_head;  // E // 128, each E / n_head wide
    const MatmulHook mm;
    ggml_context * ctx;

    ggml_tensor * inp_pos = nullptr;  // [E, n_patch] f32 key positions (none with a stored table)

    ResamplerGraph(ggml_context * ctx, const VisionModel & model, int ph, int pw, int n_batch, MatmulHook mm);

    ggml_tensor * build(ggml_tensor * x);  // [D, n_patch, B] -> [E, Q, B]
    void set_inputs() const;
};

}  // namespace mcv
