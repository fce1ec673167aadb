// Kernel-only timing of the one-digit int8 scan (the single-query path's scan) at every ISA level this
// CPU has: 10,000 rows x 384 values (3.84 MB), median and minimum of 300 calls. Not a test and never run
// by CI; built with -DKNNROUTE_BUILD_TESTS=ON (knnroute_core_bench). docs/internals.md quotes it.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "knnroute/isa.hpp"

using namespace knnroute;

int main() {
    const std::size_t n = 10000, d = 384, dp = 384;
    std::mt19937 g(1);
    std::uniform_int_distribution<int> ud(-127, 127);
    std::vector<std::int8_t> X(n * d), qs(2 * dp, 0);
    std::vector<std::uint8_t> qu(2 * dp, 128);
    for (auto& x : X) x = static_cast<std::int8_t>(ud(g));
    for (std::size_t j = 0; j < d; ++j) {
        qs[j] = static_cast<std::int8_t>(ud(g));
        qu[j] = static_cast<std::uint8_t>(qs[j] + 128);
    }
    std::vector<float> sc(n, 1.f), out(n);
    std::vector<std::int32_t> rs(n, 0);
    const QuantQuery q{qs.data(), qs.data() + dp, qu.data(), qu.data() + dp, 0.01f, 0, false};
    for (const auto& name : available_isas()) {
        set_isa(name);
        const Kernels& K = kernels();
        std::vector<double> t;
        for (int r = 0; r < 300; ++r) {
            const auto t0 = std::chrono::steady_clock::now();
            K.dot_rows_i8(q, X.data(), sc.data(), rs.data(), n, d, out.data());
            t.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
        }
        std::sort(t.begin(), t.end());
        std::printf("%-13s int8 one-digit scan, 10k x 384: median %.1f us, min %.1f us\n", name.c_str(),
                    t[t.size() / 2], t[0]);
    }
}
