#include "preprocess/resize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "runtime/parallel.h"

namespace mcv {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's fixed-point fraction bits for 8-bit images
constexpr double kSupport = 2.0;            // the cubic kernel's radius at scale 1

// Pillow's taps: every weight rounded (half away from zero) to kPrecisionBits fraction bits
FilterTaps pillow_taps(int in_size, int out_size) {
    CubicWeights cw = cubic_weights(in_size, out_size);
    FilterTaps t;
    t.ksize = cw.ksize;
    t.precision = kPrecisionBits;
    t.first = std::move(cw.first);
    t.count = std::move(cw.count);
    t.k.resize(cw.w.size());
    for (size_t i = 0; i < cw.w.size(); ++i) {
        const double f = cw.w[i] * double(1 << kPrecisionBits);
        t.k[i] = int32_t(cw.w[i] < 0 ? f - 0.5 : f + 0.5);  // round half away from zero, then truncate
    }
    return t;
}

inline uint8_t clip8(int32_t v, int precision) {
    const int32_t s = v >> precision;
    return uint8_t(s < 0 ? 0 : s > 255 ? 255 : s);
}

// Rows are filtered in blocks of kBlock: the block is first transposed so that, for each input column, its
// kBlock x 3 values are contiguous; each output column is then a sum of whole contiguous vectors, one per tap,
// which the compiler vectorises. The arithmetic per value is unchanged (same int32 sums, same order).
constexpr int kBlock = 16;
constexpr int kLanes = kBlock * 3;

// The passes take the precision as a template argument where it is known (Pillow's 22 bits: a constant shift the
// compiler folds into the clamp; 0: read from the taps, torch's per-axis precision).

// out rows [y0, y1) = horizontal filter of src rows [y0 + row_offset, ...)
template <int kFixed>
void horizontal(const ImageView & src, ImageU8 & out, int row_offset, const FilterTaps & t, int y0, int y1) {
    const int precision = kFixed ? kFixed : t.precision;  // a local: the uint8 stores below may alias t
    const int32_t half = 1 << (precision - 1);
    std::vector<uint8_t> cols(size_t(src.width) * kLanes);  // [column][row in block][channel]
    alignas(64) int32_t acc[kLanes];
    for (int yb = y0; yb < y1; yb += kBlock) {
        const int rows = std::min(kBlock, y1 - yb);
        for (int r = 0; r < rows; ++r) {
            const uint8_t * in = src.row(yb + r + row_offset);
            uint8_t * c = cols.data() + size_t(r) * 3;
            for (int x = 0; x < src.width; ++x) {
                c[size_t(x) * kLanes + 0] = in[3 * x + 0];
                c[size_t(x) * kLanes + 1] = in[3 * x + 1];
                c[size_t(x) * kLanes + 2] = in[3 * x + 2];
            }
        }
        for (int x = 0; x < out.width; ++x) {
            const int32_t * k = &t.k[size_t(x) * size_t(t.ksize)];
            const uint8_t * p = cols.data() + size_t(t.first[size_t(x)]) * kLanes;
            for (int j = 0; j < kLanes; ++j) acc[j] = half;
            for (int i = 0, n = t.count[size_t(x)]; i < n; ++i) {
                const int32_t w = k[i];
                const uint8_t * q = p + size_t(i) * kLanes;
                for (int j = 0; j < kLanes; ++j) acc[j] += int32_t(q[j]) * w;
            }
            for (int r = 0; r < rows; ++r) {
                uint8_t * o = out.row(yb + r) + size_t(x) * 3;
                o[0] = clip8(acc[3 * r + 0], precision);
                o[1] = clip8(acc[3 * r + 1], precision);
                o[2] = clip8(acc[3 * r + 2], precision);
            }
        }
    }
}

// out rows [y0, y1) = vertical filter of src (whose row 0 is input row `row_offset`)
template <int kFixed>
void vertical(const ImageView & src, ImageU8 & out, int row_offset, const FilterTaps & t, int y0, int y1) {
    const int precision = kFixed ? kFixed : t.precision;  // a local: the uint8 stores below may alias t
    const int32_t half = 1 << (precision - 1);
    const int stride = out.width * 3;
    std::vector<int32_t> acc(static_cast<size_t>(stride));
    for (int y = y0; y < y1; ++y) {
        const int32_t * k = &t.k[size_t(y) * size_t(t.ksize)];
        const int first = t.first[size_t(y)] - row_offset;
        std::fill(acc.begin(), acc.end(), half);
        for (int i = 0, n = t.count[size_t(y)]; i < n; ++i) {
            const uint8_t * in = src.row(first + i);
            const int32_t w = k[i];
            for (int j = 0; j < stride; ++j) acc[size_t(j)] += in[j] * w;
        }
        uint8_t * o = out.row(y);
        for (int j = 0; j < stride; ++j) o[j] = clip8(acc[size_t(j)], precision);
    }
}

}  // namespace

double cubic_kernel(double x) {
    constexpr double a = -0.5;
    x = std::fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}

CubicWeights cubic_weights(int in_size, int out_size) {
    const double scale = double(in_size) / out_size;
    const double filterscale = scale < 1.0 ? 1.0 : scale;
    const double support = kSupport * filterscale;
    CubicWeights cw;
    cw.ksize = int(std::ceil(support)) * 2 + 1;
    cw.first.resize(size_t(out_size));
    cw.count.resize(size_t(out_size));
    cw.w.assign(size_t(out_size) * size_t(cw.ksize), 0.0);
    for (int o = 0; o < out_size; ++o) {
        const double center = (o + 0.5) * scale;
        int lo = int(center - support + 0.5);  // truncation, as the reference rounds
        if (lo < 0) lo = 0;
        int hi = int(center + support + 0.5);
        if (hi > in_size) hi = in_size;
        const int n = hi - lo;
        double * w = &cw.w[size_t(o) * size_t(cw.ksize)];
        double sum = 0.0;
        for (int i = 0; i < n; ++i) {
            w[i] = cubic_kernel((i + lo - center + 0.5) / filterscale);
            sum += w[i];
        }
        if (sum != 0.0) {
            for (int i = 0; i < n; ++i) w[i] /= sum;
        }
        cw.first[size_t(o)] = lo;
        cw.count[size_t(o)] = n;
    }
    return cw;
}

ImageU8 resample(const ImageView & src, const FilterTaps * th, const FilterTaps * tv, int n_threads) {
    if (!th && !tv) return crop(src, 0, 0, src.width, src.height);
    // only the input rows the vertical pass will read go through the horizontal pass
    const int row_lo = tv ? tv->first.front() : 0;
    const int row_hi = tv ? tv->first.back() + tv->count.back() : src.height;

    ImageU8 mid;
    ImageView cur = src;
    int offset = 0;
    if (th) {
        mid = ImageU8(th->out_size(), row_hi - row_lo);
        const auto pass = th->precision == kPrecisionBits ? horizontal<kPrecisionBits> : horizontal<0>;
        parallel_for(mid.height, n_threads, [&](int a, int b) { pass(src, mid, row_lo, *th, a, b); });
        cur = mid.view();
        offset = row_lo;
    }
    if (!tv) return mid;
    ImageU8 out(cur.width, tv->out_size());
    const auto pass = tv->precision == kPrecisionBits ? vertical<kPrecisionBits> : vertical<0>;
    parallel_for(out.height, n_threads, [&](int a, int b) { pass(cur, out, offset, *tv, a, b); });
    return out;
}

ImageU8 resize_with(const ImageView & src, int out_w, int out_h, int n_threads, FilterTaps (*taps)(int, int)) {
    if (src.width <= 0 || src.height <= 0 || out_w <= 0 || out_h <= 0) {
        throw std::invalid_argument("resize: sizes must be positive (got " + std::to_string(src.width) + "x" +
                                    std::to_string(src.height) + " -> " + std::to_string(out_w) + "x" +
                                    std::to_string(out_h) + ")");
    }
    FilterTaps th, tv;
    if (out_w != src.width) th = taps(src.width, out_w);
    if (out_h != src.height) tv = taps(src.height, out_h);
    return resample(src, out_w != src.width ? &th : nullptr, out_h != src.height ? &tv : nullptr, n_threads);
}

ImageU8 resize_bicubic(const ImageView & src, int out_w, int out_h, int n_threads) {
    return resize_with(src, out_w, out_h, n_threads, pillow_taps);
}

ImageU8 crop(const ImageView & src, int x0, int y0, int w, int h) {
    if (x0 < 0 || y0 < 0 || w <= 0 || h <= 0 || x0 + w > src.width || y0 + h > src.height) {
        throw std::invalid_argument("crop: rectangle outside the image");
    }
    ImageU8 out(w, h);
    for (int y = 0; y < h; ++y) std::memcpy(out.row(y), src.row(y0 + y) + size_t(x0) * 3, size_t(w) * 3);
    return out;
}

}  // namespace mcv
