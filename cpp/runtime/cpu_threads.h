// A ggml CPU threadpool started once and reused by every graph evaluation (ggml otherwise starts and joins its
// worker threads on every compute; a thread that cannot start there is a GGML_ASSERT, i.e. an abort).
#pragma once

#include "ggml-backend.h"
#include "ggml.h"

namespace mcv {

class CpuThreadPool {
public:
    // Starts n_threads - 1 workers; throws OutOfMemory if the process cannot start that many threads.
    explicit CpuThreadPool(int n_threads);
    ~CpuThreadPool();
    CpuThreadPool(const CpuThreadPool &) = delete;
    CpuThreadPool & operator=(const CpuThreadPool &) = delete;

    ggml_threadpool_t get() const { return pool_; }
    int n_threads() const { return n_threads_; }
    void attach(ggml_backend_t cpu_backend) const;  // the backend computes on this pool from now on

private:
    ggml_threadpool_t pool_ = nullptr;
    int n_threads_ = 1;
};

}  // namespace mcv
