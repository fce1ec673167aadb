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

// Column means over observed (non-NaN) cells; a column with no observation gets 0.
void column_means(const float* X, std::size_t N, std::size_t M, float* out);

}  // namespace knnroute
