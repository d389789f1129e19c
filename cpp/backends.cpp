#include "backends.h"

#include "ggml-backend.h"

namespace mcv {

std::vector<DeviceInfo> list_devices() {
    std::vector<DeviceInfo> out;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        DeviceInfo d;
        d.name = ggml_backend_dev_name(dev);
        d.description = ggml_backend_dev_description(dev);
        switch (ggml_backend_dev_type(dev)) {
            case GGML_BACKEND_DEVICE_TYPE_CPU:  d.kind = "cpu"; break;
            case GGML_BACKEND_DEVICE_TYPE_GPU:  d.kind = "gpu"; break;
            case GGML_BACKEND_DEVICE_TYPE_IGPU: d.kind = "igpu"; break;
            default:                            d.kind = "accel"; break;
        }
        ggml_backend_dev_memory(dev, &d.memory_free, &d.memory_total);
        out.push_back(std::move(d));
    }
    return out;
}

}  // namespace mcv
