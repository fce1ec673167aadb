// Exact cosine top-k, batch entry points: the float32 batch (query tiles x row blocks, a bounded heap
// per query) and the dispatch to the single-query path (search_one.cpp) and the int8 batch path
// (search_batch_int8.cpp). Storage: search_storage.cpp; the heap: topk.hpp.
#include "knnroute/search.hpp"

#include <algorithm>
#include <thread>
#include <vector>

#include "knnroute/isa.hpp"
#include "search_detail.hpp"
#include "topk.hpp"

namespace knnroute {

using detail::Cand;
using detail::check_k;
using detail::kMinParallelBatch;
using detail::kQueryTile;
using detail::kRowBlock;
using detail::TopK;

int batch_threads(std::size_t B, int n_threads) {
    if (B < kMinParallelBatch) return 1;
    int t = n_threads;
    if (t <= 0) {
        unsigned hc = std::thread::hardware_concurrency();
        t = hc == 0 ? 1 : static_cast<int>(hc);
    }
    return std::max(1, std::min<int>(t, static_cast<int>((B + 1) / 2)));
}

void SupportSet::search(const float* Q, std::size_t B, std::size_t k, std::int64_t* idx, float* sim,
                        int n_threads) const {
    check_k(k, n_);
    if (B == 0) return;
    check_rows(Q, B, d_, "queries");
    detail::set_last_rerank_count(0);
    if (B < kMinParallelBatch && (precision_ != Precision::f32 || threads_for_one() > 1)) {
        // A few queries: the single-query path (compact-copy scan and/or rows split over cores) reads
        // fewer bytes per query; its results equal the batch kernel's bit for bit.
        std::vector<float> qn(d_), unused;
        for (std::size_t b = 0; b < B; ++b) {
            normalize_rows(Q + b * d_, 1, d_, qn.data());
            search_one_normalized(qn.data(), k, idx + b * k, sim + b * k, unused);
        }
        return;
    }
    const Kernels& K = kernels();
    const int t = batch_threads(B, n_threads);
    if (precision_ == Precision::int8) {
        search_batch_int8(Q, B, k, idx, sim, t);
        return;
    }
    parallel_for(B, t, [&](std::size_t qb, std::size_t qe) {
        // Normalise this range's queries once.
        std::vector<float> qn((qe - qb) * d_);
        normalize_rows(Q + qb * d_, qe - qb, d_, qn.data());
        std::vector<Cand> heaps((qe - qb) * k);
        std::vector<float> block(kQueryTile * kRowBlock);
        std::vector<TopK> tops(qe - qb);
        for (std::size_t j = 0; j < qe - qb; ++j) tops[j].reset(heaps.data() + j * k, k);
        for (std::size_t b = 0; b < n_; b += kRowBlock) {
            const std::size_t nb = std::min(kRowBlock, n_ - b);
            const float* rows = data_.data() + b * d_;
            for (std::size_t t0 = 0; t0 < qe - qb; t0 += kQueryTile) {
                const std::size_t nt = std::min(kQueryTile, qe - qb - t0);
                K.dot_block(qn.data() + t0 * d_, nt, rows, nb, d_, block.data(), kRowBlock);
                for (std::size_t j = 0; j < nt; ++j)
                    tops[t0 + j].push_block(block.data() + j * kRowBlock, nb, static_cast<std::int64_t>(b));
            }
        }
        for (std::size_t j = 0; j < qe - qb; ++j) tops[j].write(idx + (qb + j) * k, sim + (qb + j) * k);
    });
}

void topk_cosine(const float* Q, std::size_t B, const float* X, std::size_t N, std::size_t d, std::size_t k,
                 std::int64_t* idx, float* sim, int n_threads) {
    check_k(k, N);
    SupportSet s(X, N, d);
    s.search(Q, B, k, idx, sim, n_threads);
}

}  // namespace knnroute
