// The fused kNN router: support set + outcome tables + aggregation settings, one call from a query
// vector to the routed model. Thread-safe: queries take a shared lock, updates an exclusive one,
// so routing from many threads while rows are added or removed gives serial-equivalent answers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <shared_mutex>
#include <vector>

#include "knnroute/aggregate.hpp"
#include "knnroute/search.hpp"

namespace knnroute {

struct RouteDetail {
    std::int64_t model = -1;
    float kth_similarity = 0.f;   // cosine similarity of the k-th neighbour (low = far from support); on the
                                  // per-model path the routed model's last neighbour (-1: it has none)
    float agreement = 0.f;        // share of neighbours whose own best observed model (at this lam) is `model`
};

// Neighbourhoods: while every row observes every model (no NaN score) and no time decay is set, a
// query's neighbours are its k nearest rows, shared by all models (the original path). Once some row
// misses a model (feedback rows observe one), model m's prediction comes from the k nearest rows that
// observed m (SupportSet::search_one_per_model), so rows that say nothing about m never displace
// rows that do. For full rows both give the same neighbours, sums and results bit for bit.

class Router {
public:
    // X (n, d) embeddings (normalised here); scores, costs (n, M), NaN = missing. 1 <= k <= n.
    Router(const float* X, std::size_t n, std::size_t d, const float* scores, const float* costs,
           std::size_t M, std::size_t k, const AggregateParams& params);
    // Same with reduced-precision scan storage (results unchanged, see precision.hpp) and the number
    // of threads one query may use (0: automatic; 1: the calling thread only).
    Router(const float* X, std::size_t n, std::size_t d, const float* scores, const float* costs,
           std::size_t M, std::size_t k, const AggregateParams& params, Precision precision, int query_threads);

    std::size_t size() const;
    std::size_t dim() const { return d_; }
    std::size_t n_models() const;
    std::size_t k() const { return k_; }
    const AggregateParams& params() const { return params_; }
    Precision precision() const { return support_.precision(); }
    int query_threads() const { return support_.query_threads(); }
    // Bytes held: support rows (all copies) + outcome tables + priors.
    std::size_t memory_bytes() const;

    // k_eff = min(k, size()) neighbours. Batch calls split over n_threads (<= 0: all cores).
    void search(const float* Q, std::size_t B, std::size_t k, std::int64_t* idx, float* sim,
                int n_threads) const;
    // Per-model neighbourhoods (SupportSet::search_one_per_model over this router's observed cells),
    // whatever the path in use: idx/sim (B, m, k_eff), count (B, m); m checked under the lock.
    bool search_per_model(const float* Q, std::size_t B, std::size_t m, std::int64_t* idx, float* sim,
                          std::int64_t* count, int n_threads) const;
    // Outputs (B, m) sized by the caller for m models. A concurrent add_model can change the number
    // of models between the caller reading n_models() and this call taking the lock: the width is
    // therefore checked under the lock, and on a mismatch nothing is written and false is returned
    // (the caller re-reads n_models() and retries).
    bool predict(const float* Q, std::size_t B, std::size_t m, float* s_hat, float* c_hat, int n_threads) const;
    void route(const float* Q, std::size_t B, const double* lams, std::size_t L, std::int64_t* out,
               int n_threads) const;
    // Fused single query: normalise, search, aggregate, argmax on the calling thread, reusing
    // thread-local scratch (no allocation after the first call on a thread).
    std::int64_t route_one(const float* q, double lam) const;
    // s_hat/c_hat (m,) may be null (then only the detail is returned); with buffers, m is checked
    // under the lock as for predict and false means nothing was written.
    bool route_one_detail(const float* q, double lam, std::size_t m, float* s_hat, float* c_hat,
                          RouteDetail& out) const;
    // predict plus, per query and model, the effective number of neighbours that observed the model
    // (count: (sum w)^2 / sum w^2 over its observed neighbours, decay included) and the weighted
    // standard deviation of their scores (spread): the posterior's width for exploration. Outputs
    // (B, m); m checked under the lock as for predict. s_hat/c_hat equal predict's bit for bit.
    bool predict_stats(const float* Q, std::size_t B, std::size_t m, float* s_hat, float* c_hat, float* count,
                       float* spread, int n_threads) const;
    // route_one_detail plus count/spread (m,) as in predict_stats.
    bool route_one_stats(const float* q, double lam, std::size_t m, float* s_hat, float* c_hat, float* count,
                         float* spread, RouteDetail& out) const;

    // Live updates. add: n new rows with outcomes for every current model (NaN allowed) and their
    // times (null: 0, the time of the rows the router was built with; finite).
    void add(const float* X, std::size_t n, const float* scores, const float* costs, const double* times = nullptr);
    // add_model: a new outcome column (n,) for the current rows (NaN = not observed).
    void add_model(const float* score_col, const float* cost_col);
    // remove rows by index (any order, duplicates ignored); throws if out of range or if fewer than
    // one row would remain.
    void remove(const std::vector<std::int64_t>& rows);

    // Copies of the state (for persistence): embeddings (normalised), scores, costs, priors.
    std::vector<float> embeddings() const;
    // Outcome tables (n, m) row-major with m (the number of models) read under the same lock.
    std::vector<float> scores(std::size_t* m = nullptr) const;
    std::vector<float> costs(std::size_t* m = nullptr) const;
    std::vector<float> prior_scores() const;
    std::vector<float> prior_costs() const;
    std::vector<double> times() const;
    // Rows that miss at least one model's score (0: every model shares one neighbourhood).
    std::size_t partial_rows() const;

    // Time decay: with half_life h > 0, a row of time t weighs 2^(-(now - t) / h) in the aggregation
    // (multiplying its neighbour weight), now = the largest row time; 0 turns it off. Times are in
    // the caller's unit (the gateway: its feedback sequence number); rows without one are time 0.
    void set_half_life(double h);
    double half_life() const;
    // Common radius (default on): with partial rows, each model with k observing rows averages all its
    // observing rows within the widest of the models' k-th neighbours, not only its own k nearest, so
    // models are compared over one region of prompts. Off: each model's own k nearest observing rows.
    void set_common_radius(bool on);
    bool common_radius() const;
    // Replaces every row's time (n,) (restoring a saved router).
    void set_times(const double* t, std::size_t n);

private:
    void predict_unlocked(const float* Q, std::size_t B, float* s_hat, float* c_hat, int n_threads) const;
    std::int64_t route_one_locked(const float* q, double lam, float* s_hat, float* c_hat, float* count,
                                  float* spread) const;
    void refresh_priors();
    void refresh_rows();  // full_, n_partial_ from scores_; now_ from times_
    bool per_model() const { return n_partial_ > 0 || half_life_ > 0.0; }
    // The general path for one normalised query: per-model neighbourhoods (or the shared top-k when
    // every row is full), weights with decay, aggregation and statistics per model.
    void predict_one_general(const float* q_unit, float* s_hat, float* c_hat, float* count, float* spread) const;
    void stats_shared(const std::int64_t* idx, const float* sim, std::size_t k, float* count, float* spread) const;

    std::size_t d_, m_, k_;
    AggregateParams params_;
    SupportSet support_;
    std::vector<float> scores_, costs_;    // (n, M)
    std::vector<float> prior_s_, prior_c_; // (M)
    std::vector<std::uint8_t> full_;       // (n) 1: the row observes every model
    std::size_t n_partial_ = 0;
    std::vector<double> times_;            // (n)
    double half_life_ = 0.0;
    bool common_radius_ = true;
    double now_ = 0.0;                     // the largest row time
    mutable std::shared_mutex mu_;
};

}  // namespace knnroute
