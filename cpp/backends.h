// The ggml backend devices visible in this process (CPU, plus Metal/CUDA/... when llama-cpp-python has them).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace mcv {

struct DeviceInfo {
    std::string name;
    std::string description;
    std::string kind;  // "cpu", "gpu", "igpu" or "accel"
    size_t memory_free = 0;
    size_t memory_total = 0;
};

std::vector<DeviceInfo> list_devices();

}  // namespace mcv
