// Which of q8_0's per-block float steps share the pipes VPDPBUSD runs on (README: "Where the VNNI kernel's weight
// products stop"). Each loop issues independent instructions only (no chain is latency-bound), so its rate is the
// throughput of the mix; the VPDPBUSD rate of each mix beside the rate of VPDPBUSD alone says what the added
// instructions cost it. Our kernel's block step is "8 VPDPBUSD + convert, multiply, FMA" per accumulator.
//
//     g++ -O2 -mavx512f -mavx512vnni benchmarks/vnni_epilogue_ports.cpp -o /tmp/ports && /tmp/ports
//
// (x86-64 with AVX512-VNNI; one core; ends with one JSON line: each mix's VPDPBUSD rate over the rate alone)
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace {

#define DP(i) "vpdpbusd %%zmm30, %%zmm31, %%zmm" #i "\n\t"
#define DP8 DP(0) DP(1) DP(2) DP(3) DP(4) DP(5) DP(6) DP(7)
#define DP12 DP8 DP(8) DP(9) DP(10) DP(11)
#define CVT(i) "vcvtdq2ps %%zmm30, %%zmm" #i "\n\t"
#define MUL(i) "vmulps %%zmm30, %%zmm31, %%zmm" #i "\n\t"
#define FMA(i) "vfmadd231ps %%zmm30, %%zmm31, %%zmm" #i "\n\t"
// our kernel's step per accumulator and 32-block, three accumulators
#define BLOCK_STEP DP8 CVT(12) MUL(15) FMA(18) DP8 CVT(13) MUL(16) FMA(19) DP8 CVT(14) MUL(17) FMA(20)
#define X4(body) body body body body  // (fewer calls per instruction)
#define CLOBBER                                                                                                        \
    "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",         \
        "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20"

constexpr int64_t kIters = 5000000;

// VPDPBUSD per second (billions) over kIters runs of `body`, which holds 4 x 24 of them
double rate(void (*body)()) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t k = 0; k < kIters; ++k) body();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return double(kIters) * 96 / s / 1e9;
}

struct Mix {
    const char * name;
    void (*body)();
    double best = 0.0;
};

}  // namespace

int main() {
    if (!__builtin_cpu_supports("avx512vnni")) {
        std::fprintf(stderr, "this CPU has no AVX512-VNNI\n");
        return 1;
    }
    Mix mixes[] = {
        {"alone",
         [] {
             __asm__ volatile(X4(DP12 DP12)::: CLOBBER);
         }},
        {"convert",
         [] {
             __asm__ volatile(X4(DP8 CVT(12) DP8 CVT(13) DP8 CVT(14))::: CLOBBER);
         }},
        {"multiply",
         [] {
             __asm__ volatile(X4(DP8 MUL(12) DP8 MUL(13) DP8 MUL(14))::: CLOBBER);
         }},
        {"fma",
         [] {
             __asm__ volatile(X4(DP8 FMA(12) DP8 FMA(13) DP8 FMA(14))::: CLOBBER);
         }},
        {"convert_fma",
         [] {
             __asm__ volatile(X4(DP8 CVT(12) FMA(15) DP8 CVT(13) FMA(16) DP8 CVT(14) FMA(17))::: CLOBBER);
         }},
        {"convert_multiply_fma",
         [] {
             __asm__ volatile(X4(BLOCK_STEP)::: CLOBBER);
         }},
    };
    rate(mixes[0].body);                       // warm-up: clocks, the unit's power state
    for (int round = 0; round < 5; ++round) {  // interleaved rounds, each mix its best: a slow spell skews one reading
        for (Mix & m : mixes) m.best = std::max(m.best, rate(m.body));
    }
    const double alone = mixes[0].best;
    std::printf("VPDPBUSD alone: %.2f G/s\n", alone);
    std::string json = "{\"bench\": \"vnni_epilogue_ports\", \"vpdpbusd_gps\": " + std::to_string(alone);
    for (const Mix & m : mixes) {
        if (&m == &mixes[0]) continue;
        std::printf("8 VPDPBUSD + %-22s %.2f G VPDPBUSD/s = %.3f of alone\n", m.name, m.best, m.best / alone);
        char buf[96];
        std::snprintf(buf, sizeof(buf), ", \"%s\": %.3f", m.name, m.best / alone);
        json += buf;
    }
    std::printf("%s}\n", json.c_str());
    return 0;
}
