// torch's native uint8 antialiased bicubic resize on the CPU (torchvision.transforms.v2.functional.resize of a
// uint8 tensor, BICUBIC, antialias=True), which MiniCPM-V 4.6's default image processor uses: Pillow's filter
// (resize.h) with the weights quantised to int16 instead of Pillow's 22-bit fixed point. Facts from the MiniCPM-V
// 4.6 fact sheet §2.3 and torch 2.14.1's ATen/native/cpu/UpSampleKernelAVXAntialias.h; the code is ours.
#pragma once

#include "preprocess/image.h"
#include "preprocess/resize.h"

namespace mcv {

ImageU8 resize_bicubic_torch(const ImageView & src, int out_w, int out_h, int n_threads);

// One axis' int16 taps: precision p = the largest p <= 22 with int(0.5 + w_max * 2^p) < 2^15 (w_max: the largest
// weight of the axis), each weight round(w * 2^p) half away from zero.
FilterTaps torch_taps(int in_size, int out_size);

}  // namespace mcv
