#include "runtime/cpu_threads.h"

#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "runtime/errors.h"

namespace mcv {
namespace {

// The CPU backend's own functions, found through its registry entry (works when backends are loadable modules).
template <typename Fn> Fn cpu_proc(const char * name) {
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU));
    return reg ? reinterpret_cast<Fn>(ggml_backend_reg_get_proc_address(reg, name)) : nullptr;
}

using new_fn = ggml_threadpool_t (*)(ggml_threadpool_params *);
using free_fn = void (*)(ggml_threadpool_t);
using set_fn = void (*)(ggml_backend_t, ggml_threadpool_t);

}  // namespace

CpuThreadPool::CpuThreadPool(int n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads) {
    // ggml asserts that its pthread_create succeeds: try the same number of threads first, where a failure is
    // an exception
    try {
        std::vector<std::thread> probe;
        for (int i = 1; i < n_threads_; ++i) probe.emplace_back([] {});
        for (auto & t : probe) t.join();
    } catch (const std::system_error & e) {
        throw OutOfMemory("cannot start " + std::to_string(n_threads_) + " threads (" + e.what() + ")");
    }
    auto * make = cpu_proc<new_fn>("ggml_threadpool_new");
    if (!make) return;  // a CPU backend without threadpools: ggml keeps its per-compute threads
    ggml_threadpool_params params = ggml_threadpool_params_default(n_threads_);
    pool_ = make(&params);
    if (!pool_) throw OutOfMemory("cannot create a ggml threadpool of " + std::to_string(n_threads_) + " threads");
}

CpuThreadPool::~CpuThreadPool() {
    if (!pool_) return;
    if (auto * release = cpu_proc<free_fn>("ggml_threadpool_free")) release(pool_);
}

void CpuThreadPool::attach(ggml_backend_t cpu_backend) const {
    if (!pool_) return;
    if (auto * set = cpu_proc<set_fn>("ggml_backend_cpu_set_threadpool")) set(cpu_backend, pool_);
}

}  // namespace mcv
