// MiniCPM-V 4.6's vision encoder as a ggml graph (transformers 5.23.0 modeling_minicpmv4_6.py; llama.cpp's
// `models/minicpmv.cpp` names): the SigLIP2 tower with learned positions looked up by bucket (no interpolation),
// in 16x mode an insert "window merger" after layer insert_layer (attention within each 2x2 window, then each
// window's 4 tokens merged into one), the remaining layers on a quarter of the tokens, post-LN, then the final
// 2x2 merger MLP to the language model's width. 4x mode runs every layer at full resolution, then the final merger.
// One graph encodes B pieces of the same patch grid and mode.
#pragma once

#include <cstdint>
#include <vector>

#include "graphs/graph_common.h"
#include "runtime/mmproj.h"

namespace mcv {

struct Minicpmv46Graph {
    const VisionModel & model;
    const VisionHParams & hp;
    const int ph, pw;      // patch grid of every piece in the batch
    const int n_batch;     // pieces encoded together
    const int downsample;  // kDownsample16x or kDownsample4x
    const MatmulHook mm;
    ggml_context * ctx;

    ggml_tensor * inp_patches = nullptr;  // [P*P*3, ph*pw, n_batch] f32
    ggml_tensor * inp_pos = nullptr;      // [ph*pw] i32

    // throws std::invalid_argument when the grid does not divide into the mode's blocks, or the file lacks the
    // insert merger that 16x needs
    Minicpmv46Graph(ggml_context * ctx, const VisionModel & model, int ph, int pw, int n_batch, int downsample,
                    MatmulHook mm);

    // output rows per piece: (ph / 4) * (pw / 4) in 16x, (ph / 2) * (pw / 2) in 4x
    static int64_t tokens(int ph, int pw, int downsample) {
        return int64_t(ph / downsample) * int64_t(pw / downsample);
    }

    ggml_tensor * build();  // -> [E, tokens, B], rows in row-major order of the output grid

    // after allocation: pixels[b] is piece b as CHW floats of ph x pw patches
    void set_inputs(const std::vector<const float *> & pixels, PosRule rule) const;
};

}  // namespace mcv
