#include "preprocess/resize_torch.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

namespace mcv {
namespace {

constexpr int kMaxPrecision = 22;        // torch's cap on the fraction bits
constexpr double kInt16Limit = 1 << 15;  // every quantised weight must fit an int16

}  // namespace

FilterTaps torch_taps(int in_size, int out_size) {
    CubicWeights cw = cubic_weights(in_size, out_size);
    double w_max = 0.0;
    for (double w : cw.w) w_max = std::max(w_max, w);
    // the most fraction bits that keep the largest weight below 2^15 once rounded
    int p = 0;
    while (p < kMaxPrecision && int64_t(0.5 + w_max * double(int64_t(1) << (p + 1))) < kInt16Limit) ++p;
    FilterTaps t;
    t.ksize = cw.ksize;
    t.precision = p;
    t.first = std::move(cw.first);
    t.count = std::move(cw.count);
    t.k.resize(cw.w.size());
    for (size_t i = 0; i < cw.w.size(); ++i) {
        const double f = cw.w[i] * double(int64_t(1) << p);
        t.k[i] = int32_t(cw.w[i] < 0 ? f - 0.5 : f + 0.5);  // round half away from zero, then truncate
    }
    return t;
}

ImageU8 resize_bicubic_torch(const ImageView & src, int out_w, int out_h, int n_threads) {
    return resize_with(src, out_w, out_h, n_threads, torch_taps);  // (the same size: the input, as torch returns)
}

}  // namespace mcv
