// Exact cosine top-k search over a support set of unit-normalised float32 rows.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "knnroute/parallel.hpp"

namespace knnroute {

// Validates that every row of X (n, d) is finite and non-zero; throws std::invalid_argument naming
// the first bad row (`what` names the argument, e.g. "queries").
void check_rows(const float* X, std::size_t n, std::size_t d, const char* what);

// Writes the unit-normalised rows of X into out (both (n, d)); norms accumulate in double. Rows whose
// norm is already 1 within 1e-6 are copied unchanged (normalising is idempotent).
void normalize_rows(const float* X, std::size_t n, std::size_t d, float* out);

// A support set: n unit rows of dimension d, stored once (normalised at construction), searched
// exactly. Thread-safety: const methods may run concurrently; add/remove must not overlap them
// (the Router serialises them with a shared mutex).
class SupportSet {
public:
    SupportSet() = default;
    // Copies and normalises X (n, d). Throws on zero / non-finite rows or d == 0.
    SupportSet(const float* X, std::size_t n, std::size_t d);

    std::size_t size() const { return n_; }
    std::size_t dim() const { return d_; }
    const float* data() const { return data_.data(); }

    // Exact top-k by cosine similarity for B queries (B, d) (normalised here, so any non-zero
    // finite query works). Rows of idx/sim (B, k) are ordered by similarity descending, ties to the
    // lower index. k must be in [1, size()]. n_threads <= 0 means hardware concurrency; a single
    // query, or a small batch, runs on the calling thread.
    void search(const float* Q, std::size_t B, std::size_t k, std::int64_t* idx, float* sim,
                int n_threads = 0) const;

    // Same for one already-normalised query, on the calling thread, using caller scratch
    // (no allocation once scratch has grown): the production hot path.
    void search_one_normalized(const float* q_unit, std::size_t k, std::int64_t* idx, float* sim,
                               std::vector<float>& scratch) const;

    void add(const float* X, std::size_t n);                 // appends normalised rows
    void remove(const std::vector<std::int64_t>& sorted_unique_rows);

private:
    std::size_t n_ = 0, d_ = 0;
    std::vector<float> data_;
};

// One-shot exact cosine top-k of queries against an un-normalised base.
void topk_cosine(const float* Q, std::size_t B, const float* X, std::size_t N, std::size_t d,
                 std::size_t k, std::int64_t* idx, float* sim, int n_threads = 0);

// Resolved thread count for a batch of B queries (1 for small batches).
int batch_threads(std::size_t B, int n_threads);

}  // namespace knnroute
