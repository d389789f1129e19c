// MiniCPM-V's image slicing ("LLaVA-UHD"), as the original Hugging Face processor does it
// (the original `image_processing_minicpmv.py`): an overview plus a grid of slices, every side a multiple of the patch
// size.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "preprocess/image.h"

namespace mcv {

struct SliceParams {
    int max_slice_nums = 9;
    int scale_resolution = 448;
    int patch_size = 14;
    // MiniCPM-V 1.0's transform instead: the whole image squashed to one scale_resolution square (aspect ignored)
    bool square = false;
};

struct Size {
    int width = 0;
    int height = 0;
};

struct SlicePlan {
    bool sliced = false;
    int cols = 0, rows = 0;            // grid, when sliced
    Size overview;                     // the first piece (the whole image, resized)
    Size refine;                       // the image the slices are cut from, when sliced
    Size cell;                         // each slice
    std::vector<Size> pieces() const;  // overview, then slices row by row
};

SlicePlan plan_slices(int width, int height, const SliceParams & p);

// Throws std::invalid_argument naming the numbers if a piece of `plan` (of a width x height image) has more than
// `max_patches` patches (0: no limit). Only aspect ratios beyond about 1000:1 make such pieces.
void check_patch_limit(const SlicePlan & plan, int width, int height, int patch_size, int64_t max_patches);

// The resized uint8 pieces of `img`, in plan order (Pillow-exact bicubic, cropped slices).
std::vector<ImageU8> make_pieces(const ImageView & img, const SlicePlan & plan, int n_threads);

// float32 CHW: (u8 / 255 - mean[c]) / std[c], rounded as the original processor (float64 rescale, float32 after).
std::vector<float> normalize_chw(const ImageView & piece, const std::array<float, 3> & mean,
                                 const std::array<float, 3> & std);

}  // namespace mcv
