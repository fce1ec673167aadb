// The tuned kNN's whole grid in one pass: every (k, weighting, shrinkage) configuration's tuning AUC from
// one neighbour list, bit-identical to aggregate() of each configuration followed by sweep() and hull_auc().
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "knnroute/aggregate.hpp"

namespace knnroute {

struct GridConfig {
    std::size_t k = 1;        // uses the first k neighbours of each row (1 <= k <= kmax)
    AggregateParams params;   // weighting, temperature, shrinkage
};

// idx, sim (B, kmax): the kmax nearest support rows of each tuning query, nearest first (as the search
// returns them). scores (N, M) and each of the n_cost cost tables (N, M): the support outcomes (NaN =
// missing); the priors are their column means, as aggregate() uses by default. adds[c] (B, M) or null: a
// known cost added to cost model c's predictions before the sweep (computed in double, rounded to float as
// the Python path does). ts, tc (B, M): filled truth; c_max: the cost scale.
// auc (n_cost, configs.size()): hull_auc of the exact sweep of each configuration's predictions, scores x 100.
//
// Neighbour sums are accumulated once per (weighting, temperature) group up to the group's largest k, in the
// order aggregate() adds them, and read off at each smaller k; every shrinkage of a k shares them. The sums
// at k are therefore the same doubles aggregate() computes with k neighbours (softmax: when a row's first
// similarity is its largest, as the search returns them; other rows are summed again per k).
void tune_grid(const std::int64_t* idx, const float* sim, std::size_t B, std::size_t kmax, const float* scores,
               std::size_t N, std::size_t M, const std::vector<const float*>& cost_tables,
               const std::vector<const double*>& adds, const double* ts, const double* tc, double c_max,
               const std::vector<GridConfig>& configs, double* auc);

}  // namespace knnroute
