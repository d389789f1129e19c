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

// [dim]: MiniCPM-V 4.5's temporal code of time id t, [sin t*w_k | cos t*w_k], w_k = 10000^(-k / (dim / 2)) for
// k < dim / 2, in float32 as the original (numpy); t = -1 ("no time") gives zeros
std::vector<float> sincos_temporal(int dim, int t);

struct ResamplerGraph {
    const VisionModel & model;
    const VisionHParams & hp;
    const int ph, pw;    // each frame-piece's patch grid
    const int n_frames;  // frame-pieces per packed unit (0: pieces alone, one shared 2-D code)
    const int n_patch;   // keys per batch item: ph * pw, times n_frames when packed
    const int n_batch;   // pieces, or packed units
    const int n_head;    // E // 128, each E / n_head wide
    const MatmulHook mm;
    ggml_context * ctx;

    // key positions, f32: [E, n_patch] shared by the pieces, or [E, n_patch, B] per packed unit (each frame's 2-D
    // code plus its temporal code, frames one after another); none with a stored table
    ggml_tensor * inp_pos = nullptr;

    // n_frames > 0: MiniCPM-V 4.5's packed units (the original's temporal path): the input's rows per batch item
    // are n_frames frame-pieces of ph x pw patches one after another, attended as one key sequence
    ResamplerGraph(ggml_context * ctx, const VisionModel & model, int ph, int pw, int n_batch, MatmulHook mm,
                   int n_frames = 0);

    ggml_tensor * build(ggml_tensor * x);  // [D, n_patch, B] -> [E, Q, B]
    // packed: temporal_ids holds n_frames ids per unit, units in batch order (-1: none)
    void set_inputs(const std::vector<int> & temporal_ids = {}) const;
};

}  // namespace mcv
