#include "preprocess/slicing.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>

#include "preprocess/resize.h"
#include "preprocess/resize_torch.h"

namespace mcv {
namespace {

// max(round_half_even(length / unit) * unit, unit): Python's round() in the original
int ensure_divide(double length, int unit) {
    const double q = std::nearbyint(length / unit);  // default rounding mode: ties to even
    return std::max(int(q) * unit, unit);
}

Size best_resize(double w, double h, const SliceParams & p, bool allow_upscale) {
    const double s = p.scale_resolution;
    if (w * h > s * s || allow_upscale) {
        const double r = w / h;
        h = double(int64_t(s / std::sqrt(r)));  // int() truncation
        w = double(int64_t(h * r));
    }
    return {ensure_divide(w, p.size_unit()), ensure_divide(h, p.size_unit())};
}

}  // namespace

std::vector<Size> SlicePlan::pieces() const {
    std::vector<Size> out{overview};
    if (sliced) out.insert(out.end(), size_t(cols) * size_t(rows), cell);
    return out;
}

SlicePlan plan_slices(int width, int height, const SliceParams & p) {
    if (width <= 0 || height <= 0) {
        throw std::invalid_argument("image size must be positive, got " + std::to_string(width) + "x" +
                                    std::to_string(height));
    }
    if (p.max_slice_nums < 1 || p.scale_resolution < p.patch_size || p.patch_size < 1 || p.unit < 0 ||
        p.size_unit() % p.patch_size) {
        throw std::invalid_argument("invalid slicing parameters (max_slice_nums " + std::to_string(p.max_slice_nums) +
                                    ", scale_resolution " + std::to_string(p.scale_resolution) + ", patch_size " +
                                    std::to_string(p.patch_size) + ", unit " + std::to_string(p.unit) +
                                    ": a multiple of patch_size, or 0)");
    }
    const double s2 = double(p.scale_resolution) * p.scale_resolution;
    const double log_ratio = std::log(double(width) / height);
    const int multiple = int(std::min<double>(std::ceil(double(width) * height / s2), p.max_slice_nums));

    SlicePlan plan;
    plan.resize = p.resize;
    if (p.square) {
        plan.overview = {p.scale_resolution, p.scale_resolution};
        return plan;
    }
    if (multiple <= 1) {
        plan.overview = best_resize(width, height, p, /*allow_upscale=*/true);
        return plan;
    }
    // candidate grids: slice counts multiple-1 .. multiple+1 (not 1, not above the limit), every factorisation
    // cols x rows; the smallest |log aspect difference| wins, the first one on ties. 4.6 (transformers 5.23.0
    // image_processing_minicpmv4_6.py) walks rows upwards and lets an equal error with more rows win: the same
    // choice. Within one count both keep the tied grid with the most rows; grids of two counts n1 != n2 tie only
    // if W/H is the geometric mean of their aspects, irrational unless n1 * n2 is a square, which no two counts 1
    // or 2 apart are (and for sides up to 65535, max_side, W/H stays ~1e-13 away from such a tie: far more than
    // the logarithms' rounding).
    double best_err = std::numeric_limits<double>::infinity();
    int best_c = 1, best_r = 1;
    for (int n = multiple - 1; n <= multiple + 1; ++n) {
        if (n == 1 || n > p.max_slice_nums) continue;
        for (int c = 1; c <= n; ++c) {
            if (n % c) continue;
            const double err = std::fabs(log_ratio - std::log(double(c) / double(n / c)));
            if (err < best_err) {
                best_err = err;
                best_c = c;
                best_r = n / c;
            }
        }
    }
    plan.sliced = true;
    plan.cols = best_c;
    plan.rows = best_r;
    plan.overview = best_resize(width, height, p, /*allow_upscale=*/false);
    const int rw = ensure_divide(width, best_c), rh = ensure_divide(height, best_r);
    plan.cell = best_resize(double(rw) / best_c, double(rh) / best_r, p, /*allow_upscale=*/true);
    plan.refine = {plan.cell.width * best_c, plan.cell.height * best_r};
    return plan;
}

void check_patch_limit(const SlicePlan & plan, int width, int height, int patch_size, int64_t max_patches) {
    if (max_patches <= 0) return;
    const std::vector<Size> pieces = plan.pieces();
    for (size_t i = 0; i < pieces.size(); ++i) {
        const int64_t n = int64_t(pieces[i].width / patch_size) * (pieces[i].height / patch_size);
        if (n > max_patches) {
            char ratio[32];
            std::snprintf(ratio, sizeof ratio, "%.0f", double(std::max(width, height)) / std::min(width, height));
            throw std::invalid_argument("image " + std::to_string(width) + "x" + std::to_string(height) + ": piece " +
                                        std::to_string(i) + " would be " + std::to_string(pieces[i].width) + "x" +
                                        std::to_string(pieces[i].height) + " px = " + std::to_string(n) +
                                        " patches, more than max_patches " + std::to_string(max_patches) +
                                        " (aspect ratio " + ratio + ":1 is too extreme to encode)");
        }
    }
}

std::vector<ImageU8> make_pieces(const ImageView & img, const SlicePlan & plan, int n_threads) {
    const auto resize = plan.resize == ResizeKind::torch ? resize_bicubic_torch : resize_bicubic;
    std::vector<ImageU8> out;
    out.push_back(resize(img, plan.overview.width, plan.overview.height, n_threads));
    if (!plan.sliced) return out;
    const ImageU8 refine = resize(img, plan.refine.width, plan.refine.height, n_threads);
    for (int r = 0; r < plan.rows; ++r) {
        for (int c = 0; c < plan.cols; ++c) {
            out.push_back(
                crop(refine.view(), c * plan.cell.width, r * plan.cell.height, plan.cell.width, plan.cell.height));
        }
    }
    return out;
}

std::vector<float> normalize_chw(const ImageView & piece, const std::array<float, 3> & mean,
                                 const std::array<float, 3> & std, NormalizeKind kind) {
    float lut[3][256];
    for (int c = 0; c < 3; ++c) {
        if (kind == NormalizeKind::torch) {
            // transformers 5.23.0 image_processing_backends.py fuses rescale into normalize: mean and std (float32)
            // times 1 / rescale_factor (255, rounded to float32), then (x - mean') / std' in float32
            const float scale = float(1.0 / (1.0 / 255.0));
            const float m = mean[size_t(c)] * scale, s = std[size_t(c)] * scale;
            for (int v = 0; v < 256; ++v) lut[c][v] = (float(v) - m) / s;
        } else {
            for (int v = 0; v < 256; ++v) lut[c][v] = (float(v * (1.0 / 255.0)) - mean[size_t(c)]) / std[size_t(c)];
        }
    }
    const size_t plane = size_t(piece.width) * size_t(piece.height);
    std::vector<float> out(3 * plane);
    for (int y = 0; y < piece.height; ++y) {
        const uint8_t * in = piece.row(y);
        const size_t o = size_t(y) * size_t(piece.width);
        for (int x = 0; x < piece.width; ++x) {
            out[o + size_t(x)] = lut[0][in[3 * x]];
            out[plane + o + size_t(x)] = lut[1][in[3 * x + 1]];
            out[2 * plane + o + size_t(x)] = lut[2][in[3 * x + 2]];
        }
    }
    return out;
}

}  // namespace mcv
