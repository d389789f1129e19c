// The ggml backend devices visible in this process (CPU, plus Metal/CUDA/... when llama-cpp-python has them).
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "ggml-backend.h"
#include "ggml-cpp.h"

namespace mcv {

// A backend's thread count, where its registry offers the setting (the CPU backend); others are left as they are
void set_backend_threads(ggml_backend_t backend, int n_threads);

// A fresh ggml CPU backend on n_threads threads, 1 to kMaxProbeThreads (std::invalid_argument otherwise;
// std::runtime_error where this process has no CPU backend): the benchmarks' and probes' one-off graphs
constexpr int kMaxProbeThreads = 1024;
ggml_backend_ptr cpu_backend(int n_threads);

struct DeviceInfo {
    std::string name;
    std::string description;
    std::string kind;  // "cpu", "gpu", "igpu" or "accel"
    size_t memory_free = 0;
    size_t memory_total = 0;
};

std::vector<DeviceInfo> list_devices();

// The backends in ggml's registry, by name, in its order ("CUDA", "CPU"; "Metal", "BLAS", "CPU"; ...): what the
// installed llama-cpp-python's ggml was built with (and, for a GGML_BACKEND_DL build, what was found to load)
std::vector<std::string> list_backends();

// A ggml built with GGML_BACKEND_DL (backends as loadable modules, e.g. the CPU backend in one variant per
// instruction set, the best chosen at run time: the portable aarch64 build) registers nothing until someone
// loads the modules, and ggml looks for them beside the executable, not beside itself. This loads them from the
// folder libggml-base lives in (llama_cpp/lib) when no backend is registered yet; a no-op for other builds.
// Returns the number of backends registered afterwards.
size_t load_backend_modules();

// The CPU backend's features as ggml reports them ("AVX512_VNNI" -> "1", "LLAMAFILE" -> "1", ...)
std::vector<std::pair<std::string, std::string>> cpu_features();

// Whether the CPU has integer dot-product instructions ggml's int8 kernels use (AVX-VNNI / AVX512-VNNI on x86,
// DOTPROD or I8MM on ARM)
bool cpu_has_int8_dot();

// Throughput of ggml's own CPU matrix product for weights of `type` ("f32", "f16", "q8_0", ...), in G
// multiply-adds x 2 per second: a [k, n] weight times [k, m] activations, best of a few runs on n_threads
// (the peak benchmarks/bench_encode.py sets our achieved rates beside).
double ggml_matmul_gops(const std::string & type, int n_threads, int k = 4096, int n = 4096, int m = 512);

}  // namespace mcv
