// Neighbour aggregation: predicted score and cost per model from the k neighbours' outcomes.
#pragma once

#include <cstddef>
#include <cstdint>

namespace knnroute {

enum class Weighting { uniform = 0, similarity = 1, softmax = 2 };

struct AggregateParams {
    Weighting weighting = Weighting::uniform;
    // softmax: w_j = exp((sim_j - sim_max) / temperature). Must be > 0.
    float temperature = 0.05f;
    // Pseudo-count toward the per-model prior: s_hat = (sum_j w_j s_j + beta * prior) / (sum_j w_j + beta),
    // over the neighbours whose cell is observed (not NaN). beta = 0 is the paper's plain mean.
    float shrinkage = 0.0f;
};

// Weights: uniform w = 1; similarity w = max(sim, 0); softmax as above.
// For each query b and model m, skipping NaN cells of scores/costs (N, M):
//   s_hat[b, m] = (sum w s + beta prior_s[m]) / (sum w + beta); if the denominator is 0 (no observed
//   neighbour and beta = 0) the prior is used. Costs likewise with prior_c. Accumulation in double.
// idx (B, k) must hold valid rows of scores/costs; sim (B, k) as returned by the search.
void aggregate(const std::int64_t* idx, const float* sim, std::size_t B, std::size_t k,
               const float* scores, const float* costs, std::size_t N, std::size_t M,
               const float* prior_s, const float* prior_c, const AggregateParams& p,
               float* s_hat, float* c_hat);

// The weights aggregate gives one query's neighbour list of n entries (uniform 1, similarity
// max(sim, 0), softmax exp((sim - max) / temperature) with the max over these n), each multiplied by
// the time decay 2^(-(now - times[idx[j]]) / half_life) when times is not null (half_life > 0).
// n may be 0.
void neighbour_weights(const std::int64_t* idx, const float* sim, std::size_t n, const AggregateParams& p,
                       const double* times, double now, double half_life, double* w);

// One model m (column of scores/costs (N, M)) from one neighbour list with weights w (n entries,
// rows valid): s_hat and c_hat as aggregate computes them (NaN cells skipped, the same sums in the
// same order, so bit-identical to aggregate's column m for the same list and weights). Optional
// statistics of the observed scores (null: not computed): count = (sum w)^2 / sum w^2, the effective
// number of observed neighbours (their number for equal weights, 0 for none), spread = their
// weighted standard deviation (0 for none).
void aggregate_model(const std::int64_t* idx, const double* w, std::size_t n, const float* scores, const float* costs,
                     std::size_t M, std::size_t m, float prior_s, float prior_c, float shrinkage, float* s_hat,
                     float* c_hat, float* count, float* spread);

// Column means over observed (non-NaN) cells; a column with no observation gets 0.
void column_means(const float* X, std::size_t N, std::size_t M, float* out);

}  // namespace knnroute
