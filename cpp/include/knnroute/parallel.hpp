// parallel_for: split [0, n) into contiguous ranges over std::threads (the caller runs one range).
#pragma once

#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace knnroute {

template <class F>
void parallel_for(std::size_t n, int n_threads, F&& fn) {
    if (n == 0) return;
    std::size_t t = n_threads < 1 ? 1 : static_cast<std::size_t>(n_threads);
    if (t > n) t = n;
    if (t == 1) {
        fn(std::size_t{0}, n);
        return;
    }
    std::exception_ptr err;
    std::mutex err_mu;
    auto run = [&](std::size_t b, std::size_t e) {
        try {
            fn(b, e);
        } catch (...) {
            std::lock_guard<std::mutex> lock(err_mu);
            if (!err) err = std::current_exception();
        }
    };
    std::vector<std::thread> workers;
    workers.reserve(t - 1);
    const std::size_t chunk = (n + t - 1) / t;
    for (std::size_t w = 1; w < t; ++w) {
        std::size_t b = w * chunk, e = std::min(n, b + chunk);
        if (b >= e) break;
        workers.emplace_back(run, b, e);
    }
    run(0, std::min(n, chunk));
    for (auto& th : workers) th.join();
    if (err) std::rethrow_exception(err);
}

}  // namespace knnroute
