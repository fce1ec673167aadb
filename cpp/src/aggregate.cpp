#include "knnroute/aggregate.hpp"

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace knnroute {

void column_means(const float* X, std::size_t N, std::size_t M, float* out) {
    std::vector<double> sum(M, 0.0);
    std::vector<std::size_t> cnt(M, 0);
    for (std::size_t i = 0; i < N; ++i)
        for (std::size_t m = 0; m < M; ++m) {
            const float v = X[i * M + m];
            if (!std::isnan(v)) {
                sum[m] += v;
                ++cnt[m];
            }
        }
    for (std::size_t m = 0; m < M; ++m) out[m] = cnt[m] ? static_cast<float>(sum[m] / cnt[m]) : 0.f;
}

void neighbour_weights(const std::int64_t* idx, const float* sim, std::size_t n, const AggregateParams& p,
                       const double* times, double now, double half_life, double* w) {
    if (n == 0) return;
    if (p.weighting == Weighting::uniform) {
        for (std::size_t j = 0; j < n; ++j) w[j] = 1.0;
    } else if (p.weighting == Weighting::similarity) {
        for (std::size_t j = 0; j < n; ++j) w[j] = sim[j] > 0.f ? static_cast<double>(sim[j]) : 0.0;
    } else {
        float mx = sim[0];
        for (std::size_t j = 1; j < n; ++j) mx = sim[j] > mx ? sim[j] : mx;
        for (std::size_t j = 0; j < n; ++j) w[j] = std::exp((static_cast<double>(sim[j]) - mx) / p.temperature);
    }
    if (times)
        for (std::size_t j = 0; j < n; ++j)
            w[j] *= std::exp2(-(now - times[static_cast<std::size_t>(idx[j])]) / half_life);
}

void aggregate_model(const std::int64_t* idx, const double* w, std::size_t n, const float* scores, const float* costs,
                     std::size_t M, std::size_t m, float prior_s, float prior_c, float shrinkage, float* s_hat,
                     float* c_hat, float* count, float* spread) {
    const double beta = shrinkage;
    double ss = 0.0, sw = 0.0, cs = 0.0, cw = 0.0, sw2 = 0.0;
    for (std::size_t j = 0; j < n; ++j) {
        const std::size_t r = static_cast<std::size_t>(idx[j]);
        const double sv = scores[r * M + m], cv = costs[r * M + m];
        const double wj = w[j];
        const bool so_ = sv == sv, co_ = cv == cv;
        ss += so_ ? wj * sv : 0.0;
        sw += so_ ? wj : 0.0;
        sw2 += so_ ? wj * wj : 0.0;
        cs += co_ ? wj * cv : 0.0;
        cw += co_ ? wj : 0.0;
    }
    const double ds = sw + beta, dc = cw + beta;
    *s_hat = ds > 0.0 ? static_cast<float>((ss + beta * prior_s) / ds) : prior_s;
    *c_hat = dc > 0.0 ? static_cast<float>((cs + beta * prior_c) / dc) : prior_c;
    if (count) *count = sw2 > 0.0 ? static_cast<float>(sw * sw / sw2) : 0.f;
    if (spread) {
        double var = 0.0;
        if (sw > 0.0) {
            const double mu = ss / sw;
            for (std::size_t j = 0; j < n; ++j) {
                const double sv = scores[static_cast<std::size_t>(idx[j]) * M + m];
                if (sv == sv) var += w[j] * (sv - mu) * (sv - mu);
            }
            var /= sw;
        }
        *spread = static_cast<float>(std::sqrt(var));
    }
}

void aggregate(const std::int64_t* idx, const float* sim, std::size_t B, std::size_t k, const float* scores,
               const float* costs, std::size_t N, std::size_t M, const float* prior_s, const float* prior_c,
               const AggregateParams& p, float* s_hat, float* c_hat) {
    if (p.weighting == Weighting::softmax && !(p.temperature > 0.f))
        throw std::invalid_argument("temperature must be > 0 for softmax weighting");
    if (!(p.shrinkage >= 0.f)) throw std::invalid_argument("shrinkage must be >= 0");
    const double beta = p.shrinkage;
    // Per-thread scratch: this runs once per routed query, so no allocation after the first call.
    static thread_local std::vector<double> w, ss, sw, cs, cw;
    if (w.size() < k) w.resize(k);
    if (ss.size() < M) {
        ss.resize(M);
        sw.resize(M);
        cs.resize(M);
        cw.resize(M);
    }
    for (std::size_t b = 0; b < B; ++b) {
        const std::int64_t* ib = idx + b * k;
        const float* sb = sim + b * k;
        // Neighbour weights.
        if (p.weighting == Weighting::uniform) {
            for (std::size_t j = 0; j < k; ++j) w[j] = 1.0;
        } else if (p.weighting == Weighting::similarity) {
            for (std::size_t j = 0; j < k; ++j) w[j] = sb[j] > 0.f ? static_cast<double>(sb[j]) : 0.0;
        } else {
            float mx = sb[0];
            for (std::size_t j = 1; j < k; ++j) mx = sb[j] > mx ? sb[j] : mx;
            for (std::size_t j = 0; j < k; ++j) w[j] = std::exp((static_cast<double>(sb[j]) - mx) / p.temperature);
        }
        // Restrict-qualified views: the accumulators alias nothing, so the m loop runs in registers /
        // vectors instead of re-loading every accumulator after each store through a float pointer.
        double* __restrict ssp = ss.data();
        double* __restrict swp = sw.data();
        double* __restrict csp = cs.data();
        double* __restrict cwp = cw.data();
        for (std::size_t m = 0; m < M; ++m) ssp[m] = swp[m] = csp[m] = cwp[m] = 0.0;
        // The k outcome rows are scattered over the table: request them all first, so their cache
        // misses overlap instead of being paid one after another in the loop below.
        for (std::size_t j = 0; j < k; ++j) {
            const std::int64_t r = ib[j];
            if (r < 0 || static_cast<std::size_t>(r) >= N) continue;  // reported below
            const char* sr = reinterpret_cast<const char*>(scores + static_cast<std::size_t>(r) * M);
            const char* cr = reinterpret_cast<const char*>(costs + static_cast<std::size_t>(r) * M);
            __builtin_prefetch(sr);
            __builtin_prefetch(sr + M * sizeof(float) - 1);
            __builtin_prefetch(cr);
            __builtin_prefetch(cr + M * sizeof(float) - 1);
        }
        for (std::size_t j = 0; j < k; ++j) {
            const std::int64_t r = ib[j];
            if (r < 0 || static_cast<std::size_t>(r) >= N)
                throw std::invalid_argument("neighbour index " + std::to_string(r) + " out of range [0, " +
                                            std::to_string(N) + ")");
            const float* srow = scores + static_cast<std::size_t>(r) * M;
            const float* crow = costs + static_cast<std::size_t>(r) * M;
            const double wj = w[j];
            // Branch-free NaN skip (vectorisable): adding +0.0 leaves a sum bit-identical to skipping.
            for (std::size_t m = 0; m < M; ++m) {
                const double sv = srow[m], cv = crow[m];
                const bool so_ = sv == sv, co_ = cv == cv;
                ssp[m] += so_ ? wj * sv : 0.0;
                swp[m] += so_ ? wj : 0.0;
                csp[m] += co_ ? wj * cv : 0.0;
                cwp[m] += co_ ? wj : 0.0;
            }
        }
        float* so = s_hat + b * M;
        float* co = c_hat + b * M;
        for (std::size_t m = 0; m < M; ++m) {
            const double ds = sw[m] + beta, dc = cw[m] + beta;
            so[m] = ds > 0.0 ? static_cast<float>((ss[m] + beta * prior_s[m]) / ds) : prior_s[m];
            co[m] = dc > 0.0 ? static_cast<float>((cs[m] + beta * prior_c[m]) / dc) : prior_c[m];
        }
    }
}

}  // namespace knnroute
