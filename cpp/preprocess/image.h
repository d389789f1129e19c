// An 8-bit RGB image, rows top to bottom, pixels interleaved (H x W x 3), as Pillow and numpy hold it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace mcv {

// A read-only window on pixels someone else owns (e.g. a numpy array): no copy of the input image.
struct ImageView {
    const uint8_t * data = nullptr;
    int width = 0;
    int height = 0;
    size_t stride = 0;  // bytes from one row to the next
    const uint8_t * row(int y) const { return data + size_t(y) * stride; }
};

struct ImageU8 {
    int width = 0;
    int height = 0;
    std::vector<uint8_t> data;  // [height][width][3]

    ImageU8() = default;
    ImageU8(int w, int h) : width(w), height(h), data(size_t(w) * size_t(h) * 3) {}
    uint8_t * row(int y) { return data.data() + size_t(y) * size_t(width) * 3; }
    const uint8_t * row(int y) const { return data.data() + size_t(y) * size_t(width) * 3; }
    ImageView view() const { return {data.data(), width, height, size_t(width) * 3}; }
};

}  // namespace mcv
