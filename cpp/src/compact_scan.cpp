// int8 query quantisation for the compact scans (compact_scan.hpp).
#include "compact_scan.hpp"

#include <algorithm>
#include <cmath>

namespace knnroute::detail {

float quantize_query(const float* q, std::size_t d, std::size_t dp, bool two_digits, std::int8_t* qs,
                     std::uint8_t* qu, QuantQuery& out, float* eq_hi, int hi_max) {
    std::fill(qs, qs + 2 * dp, std::int8_t{0});
    std::fill(qu, qu + 2 * dp, std::uint8_t{128});
    float m4[4] = {0.f, 0.f, 0.f, 0.f};  // four lanes: a sequential max is latency-bound
    for (std::size_t j = 0; j < d; ++j) m4[j & 3] = std::max(m4[j & 3], std::fabs(q[j]));
    const float mx = std::max(std::max(m4[0], m4[1]), std::max(m4[2], m4[3]));
    const float sq = mx > 0.f ? mx / static_cast<float>(hi_max) : 1.f;
    const long hm = hi_max;
    // The digits only need to be near q / sq (any choice is exact under the bound below), so the
    // divisions are multiplications; the residuals are summed in four lanes (this loop is
    // latency-bound otherwise, and it runs once per query). The bound is the computed norm of the
    // actual residual, to within the relative 1e-6 added below.
    const double inv = 1.0 / static_cast<double>(sq), dsq = sq, inv254 = 1.0 / 254.0;
    double e2[4] = {0.0, 0.0, 0.0, 0.0}, e2h[4] = {0.0, 0.0, 0.0, 0.0};
    std::int32_t hs = 0;
    for (std::size_t j0 = 0; j0 < d; j0 += 4) {
        for (std::size_t t = 0; t < 4 && j0 + t < d; ++t) {
            const std::size_t j = j0 + t;
            const double v = static_cast<double>(q[j]) * inv;
            const long hi = std::min(hm, std::max(-hm, std::lrint(v)));
            const long lo = two_digits ? std::min(127L, std::max(-127L, std::lrint((v - hi) * 254.0))) : 0L;
            qs[j] = static_cast<std::int8_t>(hi);
            qs[dp + j] = static_cast<std::int8_t>(lo);
            qu[j] = static_cast<std::uint8_t>(hi + 128);
            qu[dp + j] = static_cast<std::uint8_t>(lo + 128);
            hs += static_cast<std::int32_t>(hi);
            const double rh = static_cast<double>(q[j]) - dsq * static_cast<double>(hi);
            const double r = rh - dsq * (static_cast<double>(lo) * inv254);
            e2[t] += r * r;
            e2h[t] += rh * rh;
        }
    }
    out = QuantQuery{qs, qs + dp, qu, qu + dp, sq, hs, two_digits};
    auto bound = [](const double* e) {
        return static_cast<float>(std::sqrt((e[0] + e[1]) + (e[2] + e[3])) * (1.0 + 1e-6) + 1e-9);
    };
    if (eq_hi) *eq_hi = bound(e2h);
    return bound(e2);
}

}  // namespace knnroute::detail
