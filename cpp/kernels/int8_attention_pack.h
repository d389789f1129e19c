// The fused attention's packed heads (int8_attention.h): one block per head of its keys and values as int16, made
// once per attention by pack_op (int8_attention_pack.cpp) and read by every query tile (int8_attention.cpp).
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MINICPMV_ATTN_X86 1

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "ggml.h"
#include "kernels/int8_layout.h"

namespace mcv::attn {

constexpr int64_t kKeys = 64;      // keys per block: one online-softmax step, and v's scale blocks
constexpr int64_t kMaxHead = 256;  // widest head (the per-tile buffers are on the stack)
constexpr float kVmax = 4000.0f;   // the values' largest int16 (with the weights' 8191: 64 products fit int32)

using int8::round_up;

// One head's packed keys and values, at a 64-byte multiple per head:
//  keys: per 16 keys, per pair of channels, 64 bytes (key lane x 2 int16 channels), then one float scale per key;
//  then the channels' factors (pack_op);
//  values: per block of 64 keys, per pair of keys, per 16 channels, 64 bytes (channel lane x 2 int16 keys), then
//  one float scale per channel.
struct HeadLayout {
    int64_t dh, pairs, dv, n_kv, blocks;
    int32_t qmax;  // the largest int16 of q and k: a sum of 2 x pairs products cannot overflow int32
    size_t k_scales, smooth, v_off, v_block, stride;
    HeadLayout(int64_t d_head, int64_t keys)
        : dh(d_head), pairs((d_head + 1) / 2), dv(round_up(d_head, 16)), n_kv(keys), blocks((keys + kKeys - 1) / kKeys),
          qmax(int32_t(std::min(32767.0, std::floor(std::sqrt(2147483647.0 / double(2 * pairs)))))) {
        const size_t n_pad = size_t(blocks * kKeys);
        k_scales = n_pad * size_t(pairs * 4);
        smooth = k_scales + n_pad * sizeof(float);  // d_head floats: the channels' factors (pack_op)
        v_off = size_t(round_up(int64_t(smooth + size_t(d_head) * sizeof(float)), 64));
        v_block = size_t(kKeys * dv) * 2 + size_t(dv) * sizeof(float);
        stride = size_t(round_up(int64_t(v_off + size_t(blocks) * v_block), 64));
    }
    size_t key_byte(int64_t j, int64_t g) const { return size_t(((j / 16) * pairs + g) * 64 + (j % 16) * 4); }
    // where the attention op's WorkCounters sit: after `heads` packed heads (pack_op zeroes them)
    size_t counters(int64_t heads) const { return stride * size_t(heads); }
};

// x as int16 (x ~ s q, |q| <= qmax; s returned): 12 to 13 bits for q . k where the int8 products' 7 are too few, as
// softmax turns the scores' absolute errors into relative errors of the weights. Reads x 8 floats at a time (n
// rounded up to 8 must be readable; the floats past n count as zeros) and writes n rounded up to 8 int16 to q.
float quantize_i16(const float * x, int64_t n, int32_t qmax, int16_t * q);

// dst: every head's HeadLayout block, then the attention op's WorkCounters (zeroed here); src: k, v
// [dh, H, n_kv, B] f32, q [dh, H, n_q, B or 1] (a ggml custom op)
void pack_op(ggml_tensor * dst, int ith, int nth, void * userdata);

}  // namespace mcv::attn

#endif
