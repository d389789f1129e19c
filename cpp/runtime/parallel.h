// Split [0, n) into contiguous ranges over n_threads threads (the calling thread takes the first range).
// A thread that cannot be started (no memory for its stack) is not an error: its range runs in the caller.
// An exception in any range (e.g. std::bad_alloc) is rethrown in the caller once every thread has finished.
#pragma once

#include <algorithm>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace mcv {

template <typename F> void parallel_for(int n, int n_threads, F && fn) {
    const int t = std::max(1, std::min(n_threads, n));
    if (t == 1) {
        fn(0, n);
        return;
    }
    std::exception_ptr error;
    std::mutex mu;
    auto guarded = [&fn, &error, &mu](int lo, int hi) {
        try {
            fn(lo, hi);
        } catch (...) {
            const std::lock_guard<std::mutex> lock(mu);
            if (!error) error = std::current_exception();
        }
    };
    const int step = (n + t - 1) / t;
    std::vector<std::pair<int, int>> here;  // ranges whose thread could not start: the caller runs them
    std::vector<std::thread> workers;
    try {
        here.reserve(size_t(t - 1));
        workers.reserve(size_t(t - 1));
    } catch (const std::bad_alloc &) {  // no threads are running yet: do it all here
        fn(0, n);
        return;
    }
    for (int i = 1; i < t; ++i) {
        const int lo = i * step, hi = std::min(n, lo + step);
        if (lo >= hi) continue;
        try {
            workers.emplace_back(guarded, lo, hi);
        } catch (const std::exception &) {  // std::system_error: no memory for another thread
            here.emplace_back(lo, hi);      // cannot throw: reserved
        }
    }
    guarded(0, std::min(n, step));
    for (const auto & [lo, hi] : here) guarded(lo, hi);
    for (auto & w : workers) w.join();
    if (error) std::rethrow_exception(error);
}

}  // namespace mcv
