// Bicubic resampling that reproduces Pillow's Image.resize(size, Image.BICUBIC) on RGB images bit for bit:
// a separable filter (horizontal pass, then vertical), cubic kernel with a = -0.5 whose support widens by the
// scale factor when downscaling (antialiasing), coefficients rounded to 22-bit fixed point, sums rounded and
// clamped to 0..255 after each pass. Facts from Pillow's `libImaging/Resample.c`; the code is ours.
// The separable engine (FilterTaps, resample) is shared with torch's uint8 resize (resize_torch.h), which differs
// only in how the weights are quantised.
#pragma once

#include <cstdint>
#include <vector>

#include "preprocess/image.h"

namespace mcv {

ImageU8 resize_bicubic(const ImageView & src, int out_w, int out_h, int n_threads);

// The cubic convolution kernel with a = -0.5 (Pillow's BICUBIC, and torch's antialiased bicubic), radius 2.
double cubic_kernel(double x);

// A rectangle copied out of an image (Pillow's Image.crop inside the image bounds).
ImageU8 crop(const ImageView & src, int x0, int y0, int w, int h);

// The antialiased cubic filter of one axis (in_size -> out_size) before quantisation: for each output position the
// first input index, how many inputs it reads and their weights (summing to 1), as Pillow and torch compute them.
struct CubicWeights {
    int ksize = 0;           // the widest filter: room per output in `w`
    std::vector<int> first;  // [out]
    std::vector<int> count;  // [out]
    std::vector<double> w;   // [out][ksize], zero past count
};
CubicWeights cubic_weights(int in_size, int out_size);

// Fixed-point taps of one axis: the weights of CubicWeights as integers with `precision` fraction bits.
struct FilterTaps {
    int ksize = 0;
    int precision = 0;
    std::vector<int> first;  // [out]
    std::vector<int> count;  // [out]
    std::vector<int32_t> k;  // [out][ksize]
    int out_size() const { return int(first.size()); }
};

// Separable resampling: the horizontal pass (taps th; nullptr: the width is kept) then the vertical one (tv), each
// sum started at half a unit, shifted right by the taps' precision and clamped to 0..255 (uint8 between passes).
ImageU8 resample(const ImageView & src, const FilterTaps * th, const FilterTaps * tv, int n_threads);

// src resized to out_w x out_h with the taps `taps(in_size, out_size)` makes for each axis whose size changes (both
// Pillow and torch skip an axis that keeps its size); throws std::invalid_argument for a size that is not positive
ImageU8 resize_with(const ImageView & src, int out_w, int out_h, int n_threads, FilterTaps (*taps)(int, int));

}  // namespace mcv
