#include "runtime/backends.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <stdexcept>

#include "ggml-backend.h"
#include "ggml-cpp.h"
#include "ggml.h"

#if !defined(_WIN32)
#include <dlfcn.h>
#endif

namespace mcv {

void set_backend_threads(ggml_backend_t backend, int n_threads) {
    ggml_backend_dev_t dev = ggml_backend_get_device(backend);
    ggml_backend_reg_t reg = dev ? ggml_backend_dev_backend_reg(dev) : nullptr;
    auto fn = reg ? reinterpret_cast<ggml_backend_set_n_threads_t>(
                        ggml_backend_reg_get_proc_address(reg, "ggml_backend_set_n_threads"))
                  : nullptr;
    if (fn) fn(backend, n_threads);
}

ggml_backend_ptr cpu_backend(int n_threads) {
    // (ggml starts these threads per compute and aborts where one cannot start: a bound keeps that out of reach)
    if (n_threads < 1 || n_threads > kMaxProbeThreads) {
        throw std::invalid_argument("n_threads must be 1 to " + std::to_string(kMaxProbeThreads) + ", not " +
                                    std::to_string(n_threads));
    }
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    ggml_backend_ptr cpu(dev ? ggml_backend_dev_init(dev, nullptr) : nullptr);
    if (!cpu) throw std::runtime_error("no ggml CPU backend");
    set_backend_threads(cpu.get(), n_threads);
    return cpu;
}

size_t load_backend_modules() {
#if !defined(_WIN32)
    if (ggml_backend_reg_count() == 0) {
        Dl_info info{};
        if (dladdr(reinterpret_cast<const void *>(&ggml_backend_reg_count), &info) != 0 && info.dli_fname) {
            std::string dir = info.dli_fname;
            const size_t slash = dir.find_last_of('/');
            dir = slash == std::string::npos ? std::string(".") : dir.substr(0, slash);
            ggml_backend_load_all_from_path(dir.c_str());
        }
    }
#endif
    return ggml_backend_reg_count();
}

std::vector<DeviceInfo> list_devices() {
    std::vector<DeviceInfo> out;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        DeviceInfo d;
        d.name = ggml_backend_dev_name(dev);
        d.description = ggml_backend_dev_description(dev);
        switch (ggml_backend_dev_type(dev)) {
            case GGML_BACKEND_DEVICE_TYPE_CPU: d.kind = "cpu"; break;
            case GGML_BACKEND_DEVICE_TYPE_GPU: d.kind = "gpu"; break;
            case GGML_BACKEND_DEVICE_TYPE_IGPU: d.kind = "igpu"; break;
            default: d.kind = "accel"; break;
        }
        ggml_backend_dev_memory(dev, &d.memory_free, &d.memory_total);
        out.push_back(std::move(d));
    }
    return out;
}

std::vector<std::string> list_backends() {
    std::vector<std::string> out;
    for (size_t i = 0; i < ggml_backend_reg_count(); ++i) {
        const char * name = ggml_backend_reg_name(ggml_backend_reg_get(i));
        out.emplace_back(name ? name : "?");
    }
    return out;
}

std::vector<std::pair<std::string, std::string>> cpu_features() {
    std::vector<std::pair<std::string, std::string>> out;
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    ggml_backend_reg_t reg = dev ? ggml_backend_dev_backend_reg(dev) : nullptr;
    auto get = reg ? reinterpret_cast<ggml_backend_get_features_t>(
                         ggml_backend_reg_get_proc_address(reg, "ggml_backend_get_features"))
                   : nullptr;
    if (!get) return out;
    for (const ggml_backend_feature * f = get(reg); f && f->name; ++f) out.emplace_back(f->name, f->value);
    return out;
}

bool cpu_has_int8_dot() {
    for (const auto & [name, value] : cpu_features()) {
        if ((name == "AVX512_VNNI" || name == "AVX_VNNI" || name == "DOTPROD" || name == "MATMUL_INT8") &&
            value != "0") {
            return true;
        }
    }
    return false;
}

double ggml_matmul_gops(const std::string & type, int n_threads, int k, int n, int m) {
    // the types whose reference quantizer needs no importance matrix (others abort without one)
    ggml_type t = GGML_TYPE_COUNT;
    for (ggml_type c : {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1,
                        GGML_TYPE_Q5_0, GGML_TYPE_Q5_1}) {
        if (type == ggml_type_name(c)) t = c;
    }
    if (t == GGML_TYPE_COUNT) throw std::invalid_argument("unsupported weight type '" + type + "'");
    if (n_threads < 1 || k <= 0 || n <= 0 || m <= 0 || k % 32) {
        throw std::invalid_argument("ggml_matmul_gops: n_threads >= 1 and positive sizes (k a multiple of 32)");
    }
    ggml_backend_ptr cpu = cpu_backend(n_threads);
    ggml_init_params ip{ggml_tensor_overhead() * 8 + ggml_graph_overhead(), nullptr, /*no_alloc =*/true};
    ggml_context_ptr ctx(ggml_init(ip));
    ggml_tensor * w = ggml_new_tensor_2d(ctx.get(), t, k, n);
    ggml_tensor * x = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_F32, k, m);
    ggml_tensor * y = ggml_mul_mat(ctx.get(), w, x);
    ggml_cgraph * g = ggml_new_graph(ctx.get());
    ggml_build_forward_expand(g, y);
    ggml_backend_buffer_ptr buf(ggml_backend_alloc_ctx_tensors(ctx.get(), cpu.get()));
    if (!buf) throw std::runtime_error("cannot allocate the matmul benchmark");
    std::mt19937 rng(0);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> wf(size_t(k) * size_t(n)), xf(size_t(k) * size_t(m));
    for (float & v : wf) v = dist(rng);
    for (float & v : xf) v = dist(rng);
    if (t == GGML_TYPE_F32) {
        ggml_backend_tensor_set(w, wf.data(), 0, ggml_nbytes(w));
    } else {
        std::vector<char> q(ggml_nbytes(w));
        ggml_get_type_traits(t)->from_float_ref(wf.data(), q.data(), int64_t(wf.size()));
        ggml_backend_tensor_set(w, q.data(), 0, q.size());
    }
    ggml_backend_tensor_set(x, xf.data(), 0, ggml_nbytes(x));
    double best = 1e30;
    for (int r = 0; r < 4; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        if (ggml_backend_graph_compute(cpu.get(), g) != GGML_STATUS_SUCCESS) {
            throw std::runtime_error("the matmul benchmark failed");
        }
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (r > 0) best = std::min(best, s);  // the first run warms caches and pages
    }
    return 2.0 * double(k) * double(n) * double(m) / best / 1e9;
}

}  // namespace mcv
