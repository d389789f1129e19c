// Split [0, n) into contiguous ranges over n_threads threads (the calling thread takes the first range).
#pragma once

#include <algorithm>
#include <thread>
#include <vector>

namespace mcv {

template <typename F>
void parallel_for(int n, int n_threads, F && fn) {
    const int t = std::max(1, std::min(n_threads, n));
    if (t == 1) {
        fn(0, n);
        return;
    }
    std::vector<std::thread> workers;
    workers.reserve(size_t(t - 1));
    const int step = (n + t - 1) / t;
    for (int i = 1; i < t; ++i) {
        const int lo = i * step, hi = std::min(n, lo + step);
        if (lo < hi) workers.emplace_back([&fn, lo, hi] { fn(lo, hi); });
    }
    fn(0, std::min(n, step));
    for (auto & w : workers) w.join();
}

}  // namespace mcv
