// Kernel-only timing of the single-query scans at every ISA level this CPU has, 10,000 rows x 384 values:
// int8 one digit (3.84 MB), f16 (7.68 MB) and f32 (15.4 MB); median and minimum of 300 calls each. Not a test and never run
// by CI; built with -DKNNROUTE_BUILD_TESTS=ON (knnroute_core_bench). docs/internals.md quotes it.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "knnroute/isa.hpp"
#include "knnroute/precision.hpp"

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
    std::normal_distribution<float> nd(0.f, 0.05f);
    std::vector<float> F(n * d), qf(d);
    std::vector<std::uint16_t> H(n * d);
    for (std::size_t t = 0; t < n * d; ++t) {
        F[t] = nd(g);
        H[t] = f32_to_f16(F[t]);
    }
    for (auto& v : qf) v = nd(g);
    auto time = [](auto&& fn) {
        std::vector<double> t;
        for (int r = 0; r < 300; ++r) {
            const auto t0 = std::chrono::steady_clock::now();
            fn();
            t.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
        }
        std::sort(t.begin(), t.end());
        return std::pair<double, double>(t[t.size() / 2], t[0]);
    };
    for (const auto& name : available_isas()) {
        set_isa(name);
        const Kernels& K = kernels();
        const auto a = time([&] { K.dot_rows_i8(q, X.data(), sc.data(), rs.data(), n, d, out.data()); });
        const auto b = time([&] { K.dot_rows_f16(qf.data(), H.data(), n, d, out.data()); });
        const auto c = time([&] { K.dot_rows(qf.data(), F.data(), n, d, out.data()); });
        std::printf("%-13s 10k x 384, median (min) us: int8 one digit %.1f (%.1f), f16 %.1f (%.1f), f32 %.1f (%.1f)\n",
                    name.c_str(), a.first, a.second, b.first, b.second, c.first, c.second);
    }
}
