// MiniCPM-V's image slicing ("LLaVA-UHD"), as the original Hugging Face processor does it
// (the original `image_processing_minicpmv.py`): an overview plus a grid of slices, every side a multiple of the patch
// size. MiniCPM-V 4.6 (transformers 5.23.0 image_processing_minicpmv4_6.py) keeps the plan with a coarser size unit
// (patch x 4 or x 2, its token merges) and torch's resize and normalisation.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "preprocess/image.h"

namespace mcv {

// Which resampler makes the pieces: Pillow's BICUBIC (2.6 and older) or torch's uint8 antialiased bicubic (4.6's
// default, torchvision image processor).
enum class ResizeKind { pil, torch };

struct SliceParams {
    int max_slice_nums = 9;
    int scale_resolution = 448;
    int patch_size = 14;
    // MiniCPM-V 1.0's transform instead: the whole image squashed to one scale_resolution square (aspect ignored)
    bool square = false;
    // piece sides are multiples of this (0: patch_size); 4.6: patch x 4 ("16x" tokens) or patch x 2 ("4x")
    int unit = 0;
    ResizeKind resize = ResizeKind::pil;
    int size_unit() const { return unit > 0 ? unit : patch_size; }
};

struct Size {
    int width = 0;
    int height = 0;
};

struct SlicePlan {
    bool sliced = false;
    int cols = 0, rows = 0;               // grid, when sliced
    Size overview;                        // the first piece (the whole image, resized)
    Size refine;                          // the image the slices are cut from, when sliced
    Size cell;                            // each slice
    ResizeKind resize = ResizeKind::pil;  // how the pieces are resampled (SliceParams::resize)
    std::vector<Size> pieces() const;     // overview, then slices row by row
};

SlicePlan plan_slices(int width, int height, const SliceParams & p);

// Throws std::invalid_argument naming the numbers if a piece of `plan` (of a width x height image) has more than
// `max_patches` patches (0: no limit). Only aspect ratios beyond about 1000:1 make such pieces.
void check_patch_limit(const SlicePlan & plan, int width, int height, int patch_size, int64_t max_patches);

// The resized uint8 pieces of `img`, in plan order (the plan's kind of bicubic, cropped slices).
std::vector<ImageU8> make_pieces(const ImageView & img, const SlicePlan & plan, int n_threads);

// How pixels become floats: as the original processors (pil: float64 rescale by 1/255, then float32 (x - mean) /
// std) or as transformers' torchvision backend (torch: rescale fused into the normalisation, all float32:
// (x - mean * 255) / (std * 255)).
enum class NormalizeKind { pil, torch };

// float32 CHW normalised pixels of an RGB piece.
std::vector<float> normalize_chw(const ImageView & piece, const std::array<float, 3> & mean,
                                 const std::array<float, 3> & std, NormalizeKind kind = NormalizeKind::pil);

}  // namespace mcv
