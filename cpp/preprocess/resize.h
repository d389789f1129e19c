// Bicubic resampling that reproduces Pillow's Image.resize(size, Image.BICUBIC) on RGB images bit for bit:
// a separable filter (horizontal pass, then vertical), cubic kernel with a = -0.5 whose support widens by the
// scale factor when downscaling (antialiasing), coefficients rounded to 22-bit fixed point, sums rounded and
// clamped to 0..255 after each pass. Facts from Pillow's `libImaging/Resample.c`; the code is ours.
#pragma once

#include "preprocess/image.h"

namespace mcv {

ImageU8 resize_bicubic(const ImageView & src, int out_w, int out_h, int n_threads);

// The cubic convolution kernel with a = -0.5 (Pillow's BICUBIC, and torch's antialiased bicubic), radius 2.
double cubic_kernel(double x);

// A rectangle copied out of an image (Pillow's Image.crop inside the image bounds).
ImageU8 crop(const ImageView & src, int x0, int y0, int w, int h);

}  // namespace mcv
