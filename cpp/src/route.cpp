#include "knnroute/route.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace knnroute {

std::int64_t route_one_row(const float* s, const float* c, std::size_t M, double lam) {
    std::size_t best = 0;
    double best_u = static_cast<double>(s[0]) - lam * static_cast<double>(c[0]);
    for (std::size_t m = 1; m < M; ++m) {
        const double u = static_cast<double>(s[m]) - lam * static_cast<double>(c[m]);
        if (u > best_u || (u == best_u && c[m] < c[best])) {
            best = m;
            best_u = u;
        }
    }
    return static_cast<std::int64_t>(best);
}

void route(const float* s_hat, const float* c_hat, std::size_t B, std::size_t M, const double* lams, std::size_t L,
           std::int64_t* out) {
    for (std::size_t b = 0; b < B; ++b)
        for (std::size_t l = 0; l < L; ++l) out[b * L + l] = route_one_row(s_hat + b * M, c_hat + b * M, M, lams[l]);
}

void envelope(const float* s, const float* c, std::size_t M, std::vector<double>& lams,
              std::vector<std::int64_t>& models) {
    lams.clear();
    models.clear();
    // lam = 0: highest score, ties to the cheaper, then the lower index.
    std::size_t cur = 0;
    for (std::size_t m = 1; m < M; ++m)
        if (s[m] > s[cur] || (s[m] == s[cur] && c[m] < c[cur])) cur = m;
    double lam = 0.0;
    lams.push_back(0.0);
    models.push_back(static_cast<std::int64_t>(cur));
    for (;;) {
        // Among strictly cheaper lines, the first to overtake `cur` as lam grows; on equal lam the
        // cheapest wins (it dominates right after the common point), then the lower index.
        std::size_t next = M;
        double next_lam = std::numeric_limits<double>::infinity();
        const double sc = s[cur], cc = c[cur];
        for (std::size_t m = 0; m < M; ++m) {
            if (!(c[m] < cc)) continue;
            double lm = (sc - static_cast<double>(s[m])) / (cc - static_cast<double>(c[m]));
            if (lm < lam) lm = lam;  // rounding guard: cur wins at lam, so the crossing is not before it
            if (lm < next_lam || (lm == next_lam && c[m] < c[next])) {
                next = m;
                next_lam = lm;
            }
        }
        if (next == M) break;
        if (next_lam <= lam) {
            models.back() = static_cast<std::int64_t>(next);  // zero-length segment: replace
        } else {
            lams.push_back(next_lam);
            models.push_back(static_cast<std::int64_t>(next));
        }
        lam = next_lam;
        cur = next;
    }
}

void sweep(const float* s_hat, const float* c_hat, const double* true_s, const double* true_c, std::size_t B,
           std::size_t M, std::vector<double>& lams, std::vector<double>& mean_cost, std::vector<double>& mean_score) {
    lams.clear();
    mean_cost.clear();
    mean_score.clear();
    if (B == 0) throw std::invalid_argument("sweep needs at least one query");
    struct Event {
        double lam;
        std::size_t q;
        std::int64_t from, to;
    };
    std::vector<Event> events;
    std::vector<double> el;
    std::vector<std::int64_t> em;
    double sum_c = 0.0, sum_s = 0.0;
    for (std::size_t b = 0; b < B; ++b) {
        envelope(s_hat + b * M, c_hat + b * M, M, el, em);
        sum_c += true_c[b * M + em[0]];
        sum_s += true_s[b * M + em[0]];
        for (std::size_t j = 1; j < el.size(); ++j) events.push_back(Event{el[j], b, em[j - 1], em[j]});
    }
    std::sort(events.begin(), events.end(), [](const Event& a, const Event& b) { return a.lam < b.lam; });
    const double inv = 1.0 / static_cast<double>(B);
    lams.push_back(0.0);
    mean_cost.push_back(sum_c * inv);
    mean_score.push_back(sum_s * inv);
    for (std::size_t e = 0; e < events.size();) {
        const double lam = events[e].lam;
        for (; e < events.size() && events[e].lam == lam; ++e) {
            const Event& ev = events[e];
            sum_c += true_c[ev.q * M + ev.to] - true_c[ev.q * M + ev.from];
            sum_s += true_s[ev.q * M + ev.to] - true_s[ev.q * M + ev.from];
        }
        lams.push_back(lam);
        mean_cost.push_back(sum_c * inv);
        mean_score.push_back(sum_s * inv);
    }
}

}  // namespace knnroute
