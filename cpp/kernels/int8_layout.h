// The layouts our int8 kernels share (int8_gemm.cpp, int8_gemm_avx2.cpp; int8_gemm_neon.cpp for aarch64): the
// packed panels of PackedWeight and the quantized activation rows, and each instruction set's entry points.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kernels/int8_gemm.h"

namespace mcv::int8 {

constexpr int64_t kBlock = PackedWeight::kBlock;
constexpr int64_t kPanel = PackedWeight::kPanel;
constexpr int64_t kGroups = kBlock / 4;         // 4 inputs per 32-bit lane (VPDPBUSD, SDOT)
constexpr int64_t kVectors = kPanel / 16;       // 16 outputs per 64 bytes of a group
constexpr size_t kBlockInts = kBlock * kPanel;  // bytes of one block of a panel
constexpr size_t kBlockBytes = kBlockInts + kPanel * sizeof(float);
constexpr int kTileRows = 4;         // activation rows per register tile
constexpr int64_t kChunkRows = 128;  // activation rows kept hot in L2 while panels stream by

inline int64_t round_up(int64_t v, int64_t to) { return (v + to - 1) / to * to; }

// f(std::integral_constant<int, MR>{}) for a tile of `rows` activation rows (1 .. kTileRows): each kernel's tile is a
// template on its row count
template <typename F> inline void with_rows(int rows, F && f) {
    static_assert(kTileRows == 4, "a case per row count");
    switch (rows) {
        case 4: f(std::integral_constant<int, 4>{}); break;
        case 3: f(std::integral_constant<int, 3>{}); break;
        case 2: f(std::integral_constant<int, 2>{}); break;
        default: f(std::integral_constant<int, 1>{}); break;
    }
}

// f(MR, c) for each 16-output tile c of a panel's first `cols` outputs, MR as with_rows gives it (the 256-bit and
// NEON kernels' tiles)
template <typename F> inline void each_tile16(int rows, int64_t cols, F && f) {
    for (int64_t c = 0; c < kVectors && c * 16 < cols; ++c) with_rows(rows, [&](auto mr) { f(mr, c); });
}

// quantized activations, one row per token: k_pad values (int8; int16 for the AVX2 kernel, whose VPMADDWD takes
// int16 pairs: the same integers), then `blocks` float scales, then `blocks` int32 corrections (-128 x the block's
// sum, for VNNI's weights stored + 128; unused elsewhere), the row padded to 64 bytes
struct ActLayout {
    int64_t k_pad, blocks, width, stride;
    ActLayout(int64_t k, Int8Isa isa)
        : k_pad(round_up(k, kBlock)), blocks(k_pad / kBlock), width(isa == Int8Isa::avx2 ? 2 : 1),
          stride(round_up(k_pad * width + blocks * 8, 64)) {}
    size_t scales() const { return size_t(k_pad * width); }
    size_t corrections() const { return size_t(k_pad * width + blocks * 4); }
    // where the products' WorkCounters sit: the row after `rows` quantized rows (the quantize op zeroes them)
    size_t counters(int64_t rows) const { return size_t(rows) * stride; }
};

// Work shared out as the threads become free: the counters live in the op's input (ActLayout::counters: the row
// after the quantized rows; attn::HeadLayout::counters: right after the packed heads), zeroed by the op that writes
// that input. Each thread of the op takes units until none is left, then leaves; the last to leave sets them back
// for the next op on the same input (q, k and v's products share their rows; ggml's barrier stands between two ops).
struct WorkCounters {
    int64_t next, done;
    static WorkCounters & at(void * data, size_t offset) {  // the counters `offset` bytes into the input
        return *reinterpret_cast<WorkCounters *>(static_cast<uint8_t *>(data) + offset);
    }
    void clear() { next = done = 0; }  // (by the op that writes the input, before ggml's barrier)
    int64_t take() { return __atomic_fetch_add(&next, 1, __ATOMIC_RELAXED); }  // >= the count of units: none left
    void leave(int nth) {
        if (__atomic_add_fetch(&done, 1, __ATOMIC_ACQ_REL) == nth) {
            __atomic_store_n(&next, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&done, 0, __ATOMIC_RELAXED);
        }
    }
};
static_assert(sizeof(WorkCounters) <= 64, "within a row (rows are padded to 64 bytes)");

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MINICPMV_X86 1
// x86 without AVX-512 (AVX2: VPMOVSXBW + VPMADDWD on int16 pairs), on the weights stored signed in pairs of inputs
// (PackedWeight::put_block) and int16 activation rows: int8_gemm_avx2.cpp. quantize_row_avx2 writes the rows of
// `lay` (int16 for the AVX2 kernel, int8 with corrections for AVX-VNNI's)
void quantize_row_avx2(const float * x, int64_t k, uint8_t * row, const ActLayout & lay, InputAct act);
void tile_rows_avx2(int rows, const uint8_t * act, const ActLayout & lay, const uint8_t * panel, float * out,
                    int64_t ldo, int64_t cols, const float * bias);
double madd_chains(int64_t iters);
// 256-bit VPDPBUSD (AVX-VNNI, or AVX512-VL's form), on the VNNI panels and the AVX2 kernel's activation rows;
// `vex`: AVX-VNNI's encoding (avx_vnni_vex(): the CPU has it), else AVX512-VL's
bool avx_vnni_vex();
void tile_rows_vnni256(int rows, const uint8_t * act, const ActLayout & lay, const uint8_t * panel, float * out,
                       int64_t ldo, int64_t cols, const float * bias, bool vex);
double dpbusd256_chains(int64_t iters);
#endif

#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define MINICPMV_NEON 1
// aarch64 with the dot-product extension (SDOT: armv8.2-a+dotprod; Raspberry Pi 5, Apple silicon), on the
// weights stored signed: int8_gemm_neon.cpp
bool neon_dot_available();
void quantize_row_neon(const float * x, int64_t k, uint8_t * row, const ActLayout & lay, InputAct act);
void tile_rows_neon(int rows, const uint8_t * act, const ActLayout & lay, const uint8_t * panel, float * out,
                    int64_t ldo, int64_t cols, const float * bias);
double sdot_chains(int64_t iters);
// aarch64 with the int8 matrix-multiply extension (SMMLA: armv8.6-a+i8mm; Apple M2 and later, Graviton 3 and 4),
// on its own order of the same integers (PackedWeight::put_block) and the NEON kernel's activation rows
bool neon_i8mm_available();
void tile_rows_i8mm(int rows, const uint8_t * act, const ActLayout & lay, const uint8_t * panel, float * out,
                    int64_t ldo, int64_t cols, const float * bias);
double smmla_chains(int64_t iters);
#endif

}  // namespace mcv::int8
