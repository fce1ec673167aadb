#include "knnroute/router.hpp"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <stdexcept>
#include <string>

#include "knnroute/route.hpp"

namespace knnroute {

namespace {

void check_outcomes(const float* S, const float* C, std::size_t n, std::size_t M) {
    for (std::size_t i = 0; i < n * M; ++i) {
        if (std::isinf(S[i]))
            throw std::invalid_argument("scores row " + std::to_string(i / M) + " model " + std::to_string(i % M) +
                                        " is infinite; use NaN for a missing outcome");
        const float c = C[i];
        if (std::isinf(c))
            throw std::invalid_argument("costs row " + std::to_string(i / M) + " model " + std::to_string(i % M) +
                                        " is infinite; use NaN for a missing outcome");
        if (c < 0.f)
            throw std::invalid_argument("costs row " + std::to_string(i / M) + " model " + std::to_string(i % M) +
                                        " is negative; costs are USD per query and must be >= 0");
    }
}

struct Scratch {
    std::vector<float> q, block, sim, s_hat, c_hat;
    std::vector<std::int64_t> idx;
    // The general path's per-model neighbour lists (M, k), their lengths (M), weights (k).
    std::vector<std::int64_t> pidx;
    std::vector<float> psim;
    std::vector<std::size_t> pcnt;
    std::vector<double> w;
    std::vector<float> all, rsim;          // every row's similarity; a model's list within the radius
    std::vector<std::int64_t> ridx;
    std::vector<Neighbor> cand;            // rows within the common radius, best first
    bool per_model = false;  // the last query on this thread took the per-model path
};

Scratch& tls_scratch() {
    static thread_local Scratch s;
    return s;
}

}  // namespace

Router::Router(const float* X, std::size_t n, std::size_t d, const float* scores, const float* costs, std::size_t M,
               std::size_t k, const AggregateParams& params)
    : Router(X, n, d, scores, costs, M, k, params, Precision::f32, 0) {}

Router::Router(const float* X, std::size_t n, std::size_t d, const float* scores, const float* costs, std::size_t M,
               std::size_t k, const AggregateParams& params, Precision precision, int query_threads)
    : d_(d), m_(M), k_(k), params_(params), support_(X, n, d, precision, query_threads) {
    if (M == 0) throw std::invalid_argument("need at least one model (scores/costs have 0 columns)");
    if (k < 1 || k > n)
        throw std::invalid_argument("k must be in [1, " + std::to_string(n) + "] (the support size), got " +
                                    std::to_string(k));
    if (params.weighting == Weighting::softmax && !(params.temperature > 0.f))
        throw std::invalid_argument("temperature must be > 0 for softmax weighting");
    if (!(params.shrinkage >= 0.f) || std::isinf(params.shrinkage))
        throw std::invalid_argument("shrinkage must be finite and >= 0");
    check_outcomes(scores, costs, n, M);
    scores_.assign(scores, scores + n * M);
    costs_.assign(costs, costs + n * M);
    times_.assign(n, 0.0);
    refresh_priors();
    refresh_rows();
}

void Router::refresh_rows() {
    const std::size_t n = support_.size();
    full_.assign(n, 1);
    n_partial_ = 0;
    for (std::size_t r = 0; r < n; ++r) {
        const float* srow = scores_.data() + r * m_;
        for (std::size_t m = 0; m < m_; ++m)
            if (std::isnan(srow[m])) {
                full_[r] = 0;
                ++n_partial_;
                break;
            }
    }
    now_ = 0.0;
    for (double t : times_) now_ = std::max(now_, t);
}

void Router::predict_one_general(const float* q, float* s_hat, float* c_hat, float* count, float* spread) const {
    Scratch& S = tls_scratch();
    const std::size_t n = support_.size();
    const std::size_t k = std::min(k_, n);
    if (S.pidx.size() < m_ * k) {
        S.pidx.resize(m_ * k);
        S.psim.resize(m_ * k);
    }
    if (S.pcnt.size() < m_) S.pcnt.resize(m_);
    if (S.w.size() < k) S.w.resize(k);
    if (S.idx.size() < k) {
        S.idx.resize(k);
        S.sim.resize(k);
    }
    const double* tt = half_life_ > 0.0 ? times_.data() : nullptr;
    const float beta = params_.shrinkage;
    if (n_partial_ == 0) {  // every row full (decay only): the shared top-k, any precision
        S.per_model = false;
        const RowPrefetch side{{scores_.data(), costs_.data()}, m_};
        support_.search_one_normalized(q, k, S.idx.data(), S.sim.data(), S.block, &side);
        neighbour_weights(S.idx.data(), S.sim.data(), k, params_, tt, now_, half_life_, S.w.data());
        for (std::size_t m = 0; m < m_; ++m)
            aggregate_model(S.idx.data(), S.w.data(), k, scores_.data(), costs_.data(), m_, m, prior_s_[m],
                            prior_c_[m], beta, s_hat + m, c_hat + m, count ? count + m : nullptr,
                            spread ? spread + m : nullptr);
        return;
    }
    S.per_model = true;
    if (S.all.size() < n) S.all.resize(n);
    support_.search_one_per_model(q, k, scores_.data(), m_, full_.data(), S.pidx.data(), S.psim.data(),
                                  S.pcnt.data(), S.all.data());
    // One radius for every model: the widest of the models' k-th neighbours (over the models with at
    // least k observing rows). Each such model then averages all its observing rows within it (its own
    // k nearest and more), so every model is judged over the same region of prompts: a model observed
    // only on the fitted rows is not compared, through a wide neighbourhood, with one that feedback
    // made local (on LLMRouter that mismatch cost 2.6 AUC points; docs/online-learning.md).
    float radius = 0.f;
    bool any = false;
    for (std::size_t m = 0; m < m_ && common_radius_; ++m)
        if (S.pcnt[m] == k) {
            const float s = S.psim[m * k + k - 1];
            radius = any ? std::min(radius, s) : s;
            any = true;
        }
    if (any) {
        S.cand.clear();
        for (std::size_t r = 0; r < n; ++r)
            if (S.all[r] >= radius) S.cand.push_back(Neighbor{S.all[r], static_cast<std::int64_t>(r)});
        std::sort(S.cand.begin(), S.cand.end(), [](const Neighbor& a, const Neighbor& b) {
            return a.sim > b.sim || (a.sim == b.sim && a.idx < b.idx);
        });
        if (S.ridx.size() < S.cand.size()) {
            S.ridx.resize(S.cand.size());
            S.rsim.resize(S.cand.size());
        }
        if (S.w.size() < S.cand.size()) S.w.resize(S.cand.size());
    }
    for (std::size_t m = 0; m < m_; ++m) {
        const std::int64_t* im = S.pidx.data() + m * k;
        const float* sm = S.psim.data() + m * k;
        std::size_t cm = S.pcnt[m];
        if (any && cm == k) {  // every observing row within the common radius, best first
            std::size_t c = 0;
            for (const Neighbor& x : S.cand) {
                const std::size_t r = static_cast<std::size_t>(x.idx);
                if (full_[r] || !std::isnan(scores_[r * m_ + m])) {
                    S.ridx[c] = x.idx;
                    S.rsim[c] = x.sim;
                    ++c;
                }
            }
            im = S.ridx.data();
            sm = S.rsim.data();
            cm = c;
        }
        neighbour_weights(im, sm, cm, params_, tt, now_, half_life_, S.w.data());
        aggregate_model(im, S.w.data(), cm, scores_.data(), costs_.data(), m_, m, prior_s_[m], prior_c_[m], beta,
                        s_hat + m, c_hat + m, count ? count + m : nullptr, spread ? spread + m : nullptr);
    }
}

void Router::stats_shared(const std::int64_t* idx, const float* sim, std::size_t k, float* count,
                          float* spread) const {
    Scratch& S = tls_scratch();
    if (S.w.size() < k) S.w.resize(k);
    neighbour_weights(idx, sim, k, params_, nullptr, 0.0, 0.0, S.w.data());
    float s, c;
    for (std::size_t m = 0; m < m_; ++m)
        aggregate_model(idx, S.w.data(), k, scores_.data(), costs_.data(), m_, m, prior_s_[m], prior_c_[m],
                        params_.shrinkage, &s, &c, count + m, spread + m);
}

bool Router::search_per_model(const float* Q, std::size_t B, std::size_t m, std::int64_t* idx, float* sim,
                              std::int64_t* count, int n_threads) const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    if (m != m_) return false;
    if (B == 0) return true;
    check_rows(Q, B, d_, "queries");
    const std::size_t k = std::min(k_, support_.size());
    parallel_for(B, batch_threads(B, n_threads), [&](std::size_t b0, std::size_t b1) {
        std::vector<float> qn(d_);
        std::vector<std::size_t> cnt(m_);
        for (std::size_t b = b0; b < b1; ++b) {
            normalize_rows(Q + b * d_, 1, d_, qn.data());
            support_.search_one_per_model(qn.data(), k, scores_.data(), m_, full_.data(), idx + b * m_ * k,
                                          sim + b * m_ * k, cnt.data());
            for (std::size_t j = 0; j < m_; ++j) count[b * m_ + j] = static_cast<std::int64_t>(cnt[j]);
        }
    });
    return true;
}

std::size_t Router::partial_rows() const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    return n_partial_;
}

void Router::set_half_life(double h) {
    if (!(h >= 0.0) || std::isinf(h)) throw std::invalid_argument("half_life must be finite and >= 0 (0: no decay)");
    std::unique_lock<std::shared_mutex> lock(mu_);
    half_life_ = h;
    refresh_rows();
}

void Router::set_common_radius(bool on) {
    std::unique_lock<std::shared_mutex> lock(mu_);
    common_radius_ = on;
}

bool Router::common_radius() const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    return common_radius_;
}

double Router::half_life() const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    return half_life_;
}

void Router::set_times(const double* t, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i)
        if (!std::isfinite(t[i])) throw std::invalid_argument("times must be finite");
    std::unique_lock<std::shared_mutex> lock(mu_);
    if (n != support_.size())
        throw std::invalid_argument("times needs one value per row (" + std::to_string(support_.size()) + "), got " +
                                    std::to_string(n));
    times_.assign(t, t + n);
    refresh_rows();
}

std::vector<double> Router::times() const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    return times_;
}

void Router::refresh_priors() {
    const std::size_t n = support_.size();
    prior_s_.assign(m_, 0.f);
    prior_c_.assign(m_, 0.f);
    column_means(scores_.data(), n, m_, prior_s_.data());
    column_means(costs_.data(), n, m_, prior_c_.data());
}

std::size_t Router::size() const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    return support_.size();
}

std::size_t Router::memory_bytes() const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    return support_.memory_bytes() + (scores_.size() + costs_.size() + prior_s_.size() + prior_c_.size()) * sizeof(float) +
           times_.size() * sizeof(double) + full_.size();
}

std::size_t Router::n_models() const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    return m_;
}

void Router::search(const float* Q, std::size_t B, std::size_t k, std::int64_t* idx, float* sim, int n_threads) const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    support_.search(Q, B, k, idx, sim, n_threads);
}

void Router::predict_unlocked(const float* Q, std::size_t B, float* s_hat, float* c_hat, int n_threads) const {
    if (per_model()) {
        check_rows(Q, B, d_, "queries");
        parallel_for(B, batch_threads(B, n_threads), [&](std::size_t b0, std::size_t b1) {
            std::vector<float> qn(d_);
            for (std::size_t b = b0; b < b1; ++b) {
                normalize_rows(Q + b * d_, 1, d_, qn.data());
                predict_one_general(qn.data(), s_hat + b * m_, c_hat + b * m_, nullptr, nullptr);
            }
        });
        return;
    }
    const std::size_t n = support_.size();
    const std::size_t k = std::min(k_, n);
    std::vector<std::int64_t> idx(B * k);
    std::vector<float> sim(B * k);
    support_.search(Q, B, k, idx.data(), sim.data(), n_threads);
    const int t = batch_threads(B, n_threads);
    parallel_for(B, t, [&](std::size_t b0, std::size_t b1) {
        aggregate(idx.data() + b0 * k, sim.data() + b0 * k, b1 - b0, k, scores_.data(), costs_.data(), n, m_,
                  prior_s_.data(), prior_c_.data(), params_, s_hat + b0 * m_, c_hat + b0 * m_);
    });
}

bool Router::predict_stats(const float* Q, std::size_t B, std::size_t m, float* s_hat, float* c_hat, float* count,
                           float* spread, int n_threads) const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    if (m != m_) return false;
    if (B == 0) return true;
    check_rows(Q, B, d_, "queries");
    const std::size_t k = std::min(k_, support_.size());
    const bool general = per_model();
    std::vector<std::int64_t> idx;
    std::vector<float> sim;
    if (!general) {  // the original path for s_hat / c_hat, then the statistics over the same lists
        idx.resize(B * k);
        sim.resize(B * k);
        support_.search(Q, B, k, idx.data(), sim.data(), n_threads);
    }
    parallel_for(B, batch_threads(B, n_threads), [&](std::size_t b0, std::size_t b1) {
        std::vector<float> qn(d_);
        for (std::size_t b = b0; b < b1; ++b) {
            if (general) {
                normalize_rows(Q + b * d_, 1, d_, qn.data());
                predict_one_general(qn.data(), s_hat + b * m_, c_hat + b * m_, count + b * m_, spread + b * m_);
            } else {
                aggregate(idx.data() + b * k, sim.data() + b * k, 1, k, scores_.data(), costs_.data(),
                          support_.size(), m_, prior_s_.data(), prior_c_.data(), params_, s_hat + b * m_,
                          c_hat + b * m_);
                stats_shared(idx.data() + b * k, sim.data() + b * k, k, count + b * m_, spread + b * m_);
            }
        }
    });
    return true;
}

bool Router::predict(const float* Q, std::size_t B, std::size_t m, float* s_hat, float* c_hat,
                     int n_threads) const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    if (m != m_) return false;
    predict_unlocked(Q, B, s_hat, c_hat, n_threads);
    return true;
}

void Router::route(const float* Q, std::size_t B, const double* lams, std::size_t L, std::int64_t* out,
                   int n_threads) const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    std::vector<float> s(B * m_), c(B * m_);
    predict_unlocked(Q, B, s.data(), c.data(), n_threads);
    knnroute::route(s.data(), c.data(), B, m_, lams, L, out);
}

// The single-query path of route_one and route_one_detail, under the caller's shared lock:
// normalise, search, aggregate into s_hat / c_hat (null: this thread's scratch), argmax; with count /
// spread, their statistics too. The neighbours stay in this thread's scratch (idx, sim; or the
// per-model lists) for route_one_detail.
std::int64_t Router::route_one_locked(const float* q, double lam, float* s_hat, float* c_hat, float* count,
                                      float* spread) const {
    check_rows(q, 1, d_, "query");
    Scratch& S = tls_scratch();
    const std::size_t n = support_.size();
    const std::size_t k = std::min(k_, n);
    if (S.q.size() < d_) S.q.resize(d_);
    if (S.idx.size() < k) {
        S.idx.resize(k);
        S.sim.resize(k);
    }
    if (S.s_hat.size() < m_) {
        S.s_hat.resize(m_);
        S.c_hat.resize(m_);
    }
    normalize_rows(q, 1, d_, S.q.data());
    float* sh = s_hat ? s_hat : S.s_hat.data();
    float* ch = c_hat ? c_hat : S.c_hat.data();
    if (per_model()) {
        predict_one_general(S.q.data(), sh, ch, count, spread);
        return route_one_row(sh, ch, m_, lam);
    }
    S.per_model = false;
    const RowPrefetch side{{scores_.data(), costs_.data()}, m_};
    support_.search_one_normalized(S.q.data(), k, S.idx.data(), S.sim.data(), S.block, &side);
    aggregate(S.idx.data(), S.sim.data(), 1, k, scores_.data(), costs_.data(), n, m_, prior_s_.data(),
              prior_c_.data(), params_, sh, ch);
    if (count && spread) stats_shared(S.idx.data(), S.sim.data(), k, count, spread);
    return route_one_row(sh, ch, m_, lam);
}

std::int64_t Router::route_one(const float* q, double lam) const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    return route_one_locked(q, lam, nullptr, nullptr, nullptr, nullptr);
}

bool Router::route_one_detail(const float* q, double lam, std::size_t m_out, float* s_out, float* c_out,
                              RouteDetail& out) const {
    return route_one_stats(q, lam, m_out, s_out, c_out, nullptr, nullptr, out);
}

bool Router::route_one_stats(const float* q, double lam, std::size_t m_out, float* s_out, float* c_out,
                             float* count, float* spread, RouteDetail& out) const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    if ((s_out || c_out || count || spread) && m_out != m_) return false;
    RouteDetail r;
    r.model = route_one_locked(q, lam, s_out, c_out, count, spread);
    const Scratch& S = tls_scratch();
    const std::size_t k = std::min(k_, support_.size());
    // The routed model's neighbours: the shared top-k, or on the per-model path its own list.
    const std::int64_t* nid = S.idx.data();
    const float* nsim = S.sim.data();
    std::size_t nk = k;
    if (S.per_model) {
        nid = S.pidx.data() + static_cast<std::size_t>(r.model) * k;
        nsim = S.psim.data() + static_cast<std::size_t>(r.model) * k;
        nk = S.pcnt[static_cast<std::size_t>(r.model)];
    }
    r.kth_similarity = nk ? nsim[nk - 1] : -1.f;
    // Agreement: share of neighbours whose own best observed model (true utility at lam) is r.model.
    std::size_t agree = 0;
    for (std::size_t j = 0; j < nk; ++j) {
        const float* srow = scores_.data() + static_cast<std::size_t>(nid[j]) * m_;
        const float* crow = costs_.data() + static_cast<std::size_t>(nid[j]) * m_;
        std::int64_t best = -1;
        double best_u = 0.0, best_c = 0.0;
        for (std::size_t m = 0; m < m_; ++m) {
            if (std::isnan(srow[m])) continue;
            const double c = std::isnan(crow[m]) ? prior_c_[m] : crow[m];
            const double u = srow[m] - lam * c;
            if (best < 0 || u > best_u || (u == best_u && c < best_c)) {
                best = static_cast<std::int64_t>(m);
                best_u = u;
                best_c = c;
            }
        }
        if (best == r.model) ++agree;
    }
    r.agreement = nk ? static_cast<float>(agree) / static_cast<float>(nk) : 0.f;
    out = r;
    return true;
}

void Router::add(const float* X, std::size_t n, const float* scores, const float* costs, const double* times) {
    check_rows(X, n, d_, "new embeddings");
    if (times)
        for (std::size_t i = 0; i < n; ++i)
            if (!std::isfinite(times[i])) throw std::invalid_argument("times must be finite");
    std::unique_lock<std::shared_mutex> lock(mu_);
    check_outcomes(scores, costs, n, m_);
    support_.add(X, n);
    scores_.insert(scores_.end(), scores, scores + n * m_);
    costs_.insert(costs_.end(), costs, costs + n * m_);
    if (times)
        times_.insert(times_.end(), times, times + n);
    else
        times_.insert(times_.end(), n, 0.0);
    refresh_priors();
    // the new rows' flags only (O(n M) for n new rows, not for the whole table)
    for (std::size_t i = 0; i < n; ++i) {
        const float* srow = scores + i * m_;
        std::uint8_t f = 1;
        for (std::size_t m = 0; m < m_; ++m)
            if (std::isnan(srow[m])) f = 0;
        full_.push_back(f);
        n_partial_ += f ? 0 : 1;
        now_ = std::max(now_, times_[times_.size() - n + i]);
    }
}

void Router::add_model(const float* score_col, const float* cost_col) {
    std::unique_lock<std::shared_mutex> lock(mu_);
    const std::size_t n = support_.size();
    check_outcomes(score_col, cost_col, n, 1);
    std::vector<float> s2(n * (m_ + 1)), c2(n * (m_ + 1));
    for (std::size_t i = 0; i < n; ++i) {
        std::copy(scores_.begin() + i * m_, scores_.begin() + (i + 1) * m_, s2.begin() + i * (m_ + 1));
        std::copy(costs_.begin() + i * m_, costs_.begin() + (i + 1) * m_, c2.begin() + i * (m_ + 1));
        s2[i * (m_ + 1) + m_] = score_col[i];
        c2[i * (m_ + 1) + m_] = cost_col[i];
    }
    scores_.swap(s2);
    costs_.swap(c2);
    ++m_;
    refresh_priors();
    refresh_rows();
}

void Router::remove(const std::vector<std::int64_t>& rows_in) {
    std::unique_lock<std::shared_mutex> lock(mu_);
    const std::size_t n = support_.size();
    std::vector<std::int64_t> rows(rows_in);
    std::sort(rows.begin(), rows.end());
    rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
    for (std::int64_t r : rows)
        if (r < 0 || static_cast<std::size_t>(r) >= n)
            throw std::invalid_argument("row " + std::to_string(r) + " out of range [0, " + std::to_string(n) + ")");
    if (rows.size() >= n) throw std::invalid_argument("cannot remove every row: a router needs at least one");
    support_.remove(rows);
    std::size_t w = 0, next = 0;
    for (std::size_t r = 0; r < n; ++r) {
        if (next < rows.size() && rows[next] == static_cast<std::int64_t>(r)) {
            ++next;
            continue;
        }
        if (w != r) {
            std::copy(scores_.begin() + r * m_, scores_.begin() + (r + 1) * m_, scores_.begin() + w * m_);
            std::copy(costs_.begin() + r * m_, costs_.begin() + (r + 1) * m_, costs_.begin() + w * m_);
            times_[w] = times_[r];
        }
        ++w;
    }
    scores_.resize(w * m_);
    costs_.resize(w * m_);
    times_.resize(w);
    refresh_priors();
    refresh_rows();
}

std::vector<float> Router::embeddings() const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    return std::vector<float>(support_.data(), support_.data() + support_.size() * d_);
}
std::vector<float> Router::scores(std::size_t* m) const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    if (m) *m = m_;
    return scores_;
}
std::vector<float> Router::costs(std::size_t* m) const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    if (m) *m = m_;
    return costs_;
}
std::vector<float> Router::prior_scores() const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    return prior_s_;
}
std::vector<float> Router::prior_costs() const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    return prior_c_;
}

}  // namespace knnroute
