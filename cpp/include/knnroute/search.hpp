// Exact cosine top-k search over a support set of unit-normalised float32 rows.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "knnroute/hugepage.hpp"
#include "knnroute/parallel.hpp"
#include "knnroute/precision.hpp"

namespace knnroute {

// Validates that every row of X (n, d) is finite and non-zero; throws std::invalid_argument naming
// the first bad row (`what` names the argument, e.g. "queries").
void check_rows(const float* X, std::size_t n, std::size_t d, const char* what);

// Writes the unit-normalised rows of X into out (both (n, d)); norms accumulate in double. Rows whose
// norm is already 1 within 1e-6 are copied unchanged (normalising is idempotent).
void normalize_rows(const float* X, std::size_t n, std::size_t d, float* out);

// One search hit: cosine similarity and row index.
struct Neighbor {
    float sim;
    std::int64_t idx;
};

// Rows of side tables that a caller will read for the neighbours a single-query search finds (the
// Router's score and cost rows). The compact-copy re-rank prefetches row r of each table as it
// re-ranks row r, so the lines arrive while the float32 row is summed instead of stalling the
// aggregation that follows. The same prefetches in one burst (the aggregation's own, after the
// search, or at the start of the re-rank: 1.003x) do not help; one row at a time during the re-rank
// made int8 route_one at 10k x 384 1.07x faster (paired A/B). Only the calling thread's scan uses it
// (a worker's cache is not the caller's), and only compact-copy scans re-rank.
struct RowPrefetch {
    const float* table[2] = {nullptr, nullptr};
    std::size_t row_floats = 0;  // floats per row of each table
};

// A support set: n unit rows of dimension d, stored once (normalised at construction), searched
// exactly. Thread-safety: const methods may run concurrently; add/remove must not overlap them
// (the Router serialises them with a shared mutex).
class SupportSet {
public:
    SupportSet() = default;
    // Copies and normalises X (n, d). Throws on zero / non-finite rows or d == 0.
    SupportSet(const float* X, std::size_t n, std::size_t d);
    // Same, plus a compact copy in `precision` for the single-query scan (precision.hpp): results are
    // identical to f32; memory grows by precision_value_bytes * d (+ 12 bytes for int8, + 4 otherwise)
    // per row. query_threads: threads one query's scan may use (0: automatic, on when the scanned copy
    // is large enough to pay for waking a worker; 1: always the calling thread).
    SupportSet(const float* X, std::size_t n, std::size_t d, Precision precision, int query_threads = 0);

    std::size_t size() const { return n_; }
    std::size_t dim() const { return d_; }
    const float* data() const { return data_.data(); }
    Precision precision() const { return precision_; }
    int query_threads() const { return query_threads_; }
    void set_query_threads(int t) { query_threads_ = t < 0 ? 0 : t; }
    // Bytes held for the rows (float32 rows + compact copy + per-row scale/bound), excluding outcomes.
    std::size_t memory_bytes() const;

    // Exact top-k by cosine similarity for B queries (B, d) (normalised here, so any non-zero
    // finite query works). Rows of idx/sim (B, k) are ordered by similarity descending, ties to the
    // lower index. k must be in [1, size()]. n_threads <= 0 means hardware concurrency; a single
    // query, or a small batch, runs on the calling thread.
    void search(const float* Q, std::size_t B, std::size_t k, std::int64_t* idx, float* sim,
                int n_threads = 0) const;

    // Same for one already-normalised query, on the calling thread, using caller scratch
    // (no allocation once scratch has grown): the production hot path.
    void search_one_normalized(const float* q_unit, std::size_t k, std::int64_t* idx, float* sim,
                               std::vector<float>& scratch, const RowPrefetch* side = nullptr) const;

    // Per-model neighbourhoods from one scan (search_per_model.cpp): for each model m of M, the
    // min(k, rows observing m) nearest rows among those that observed m, best first (ties to the
    // lower index), into idx/sim (M, k) row m, and that number into count[m]; unused slots get
    // -1 / 0. Row r observes m when full[r] != 0 or scores[r * M + m] is not NaN (scores (n, M)).
    // One f32 similarity pass (the f32 row kernel, whatever the compact precision: the compact
    // scans' cut T is a single k-th bound, not one per model), one shared bounded heap for the full
    // rows and one per model for the partial rows, merged per model. q_unit normalised; calling
    // thread; k in [1, size()]. all_sims (size(), optional): every row's similarity, as a by-product.
    void search_one_per_model(const float* q_unit, std::size_t k, const float* scores, std::size_t M,
                              const std::uint8_t* full, std::int64_t* idx, float* sim, std::size_t* count,
                              float* all_sims = nullptr) const;

    void add(const float* X, std::size_t n);                 // appends normalised rows
    void remove(const std::vector<std::int64_t>& sorted_unique_rows);

private:
    void encode_tail(std::size_t from);
    // Exact top-min(k, r1 - r0) of rows [r0, r1), sorted best first, into out.
    void scan_range(const float* q, std::size_t k, std::size_t r0, std::size_t r1, std::vector<Neighbor>& out,
                    const RowPrefetch* side = nullptr) const;
    int threads_for_one() const;
    void search_batch_int8(const float* Q, std::size_t B, std::size_t k, std::int64_t* idx, float* sim,
                           int threads) const;

    std::size_t n_ = 0, d_ = 0;
    HugeVector<float> data_;
    Precision precision_ = Precision::f32;
    int query_threads_ = 0;
    HugeVector<std::uint16_t> c16_;  // bf16 / f16 copy (n, d)
    HugeVector<std::int8_t> c8_;     // int8 copy (n, d)
    std::vector<float> scale_;        // int8 row scales (n)
    std::vector<std::int32_t> rowsum_;  // int8 row sums (n), for VNNI's unsigned-operand offset
    std::vector<float> err_;          // per-row error bound (n), see precision.hpp
};

// Rows re-ranked exactly by the last reduced-precision single-query search on this thread (a
// diagnostic for benchmarks: the candidate-set size), 0 after an f32 search.
std::size_t last_rerank_count();

// One-shot exact cosine top-k of queries against an un-normalised base.
void topk_cosine(const float* Q, std::size_t B, const float* X, std::size_t N, std::size_t d,
                 std::size_t k, std::int64_t* idx, float* sim, int n_threads = 0);

// Resolved thread count for a batch of B queries (1 for small batches).
int batch_threads(std::size_t B, int n_threads);

}  // namespace knnroute
