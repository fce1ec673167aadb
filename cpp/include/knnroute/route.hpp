// Routing: argmax_m s_m - lam * c_m, for many lam at once; the exact lam sweep.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace knnroute {

// The routed model for one query at one lam: argmax of s_m - lam c_m computed in double; ties go to
// the cheaper model (smaller c), then the lower index.
std::int64_t route_one_row(const float* s, const float* c, std::size_t M, double lam);

// out[b * L + l] = route_one_row(s[b], c[b], lam[l]). O(B L M).
void route(const float* s_hat, const float* c_hat, std::size_t B, std::size_t M, const double* lams,
           std::size_t L, std::int64_t* out);

// Upper envelope of the lines y = s_m - lam c_m for lam >= 0 (one query). On return lams[0] == 0 and
// models[j] is the routed model for lam in [lams[j], lams[j+1]) (the last segment is unbounded).
// At a breakpoint the cheaper model wins, matching route()'s tie rule. O(M^2) worst case.
void envelope(const float* s, const float* c, std::size_t M, std::vector<double>& lams,
              std::vector<std::int64_t>& models);

// Exact cost-quality curve of a router over all lam >= 0.
// s_hat, c_hat (B, M): predictions; true_s, true_c (B, M): finite true outcomes (fill missing first).
// Point p = (lams[p], mean true cost, mean true score) over the B queries, constant on
// [lams[p], lams[p+1]). lams[0] == 0. O(E log E) for E envelope breakpoints in total.
void sweep(const float* s_hat, const float* c_hat, const double* true_s, const double* true_c,
           std::size_t B, std::size_t M, std::vector<double>& lams, std::vector<double>& mean_cost,
           std::vector<double>& mean_score);

}  // namespace knnroute
