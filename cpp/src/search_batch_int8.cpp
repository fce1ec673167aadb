// The int8 batch search: one-digit int8 queries in tiles over shared (packed) row blocks, per-query
// candidate selection, exact float32 re-rank.
#include <algorithm>
#include <vector>

#include "compact_scan.hpp"
#include "knnroute/isa.hpp"
#include "knnroute/search.hpp"
#include "search_detail.hpp"
#include "topk.hpp"

namespace knnroute {

using detail::Cand;
using detail::CompactScan;
using detail::kQueryTile;
using detail::kRowBlock;
using detail::quantize_query;
using detail::TopK;

namespace {
// One chunk of batch queries, normalised and quantised to one int8 digit (the batch kernels read only
// hi): the digit buffers, their QuantQuery views and each query's bound eq.
struct BatchQueries {
    std::vector<float> qn;
    std::vector<std::int8_t> qs;
    std::vector<std::uint8_t> qu;
    std::vector<QuantQuery> qq;
    std::vector<float> eq;
    BatchQueries(const float* Q, std::size_t nq, std::size_t d, int hi_max)
        : qn(nq * d), qs(nq * 2 * padded(d)), qu(qs.size()), qq(nq), eq(nq) {
        const std::size_t dp = padded(d);
        normalize_rows(Q, nq, d, qn.data());
        for (std::size_t j = 0; j < nq; ++j)
            eq[j] = quantize_query(qn.data() + j * d, d, dp, false, qs.data() + j * 2 * dp, qu.data() + j * 2 * dp,
                                   qq[j], nullptr, hi_max);
    }
    static std::size_t padded(std::size_t d) { return (d + 63) & ~std::size_t{63}; }
};
}  // namespace

// Batch search over the int8 copy: query tiles share each block of int8 rows (dot_block_i8, one-digit
// queries: half the integer work of the two-digit single-query scan, a looser bound), each query keeps
// its own candidate state, then an exact float32 re-rank per query. Same results as the f32 search.
void SupportSet::search_batch_int8(const float* Q, std::size_t B, std::size_t k, std::int64_t* idx, float* sim,
                                   int threads) const {
    const Kernels& K = kernels();
    std::vector<std::size_t> reranked(B, 0);
    // Two passes per query tile when a tile's similarities to every row fit the buffer (<= 1 MiB, at
    // least 4 queries): the kernel fills them for all rows, then each query selects its candidates
    // at once (CompactScan::select_all). The row blocks are packed once per call and shared by the
    // threads. Larger support sets stream: each block's similarities are consumed at once (offer).
    const std::size_t tile = std::min<std::size_t>(kQueryTile, (std::size_t{1} << 18) / n_);
    if (tile >= 4) {
        const std::size_t blocks = (n_ + kRowBlock - 1) / kRowBlock;
        std::vector<I8Pack> packs(blocks);
        for (std::size_t bi = 0; bi < blocks; ++bi) {  // nq = 0: packs the block (VNNI path), computes nothing
            const std::size_t b = bi * kRowBlock, nb = std::min(kRowBlock, n_ - b);
            K.dot_block_i8(nullptr, 0, c8_.data() + b * d_, scale_.data() + b, rowsum_.data() + b, nb, d_, nullptr,
                           n_, &packs[bi]);
        }
        parallel_for(B, threads, [&](std::size_t qb, std::size_t qe) {
            const std::size_t nq = qe - qb;
            const BatchQueries bq(Q + qb * d_, nq, d_, K.i8_batch_hi_max);
            const std::vector<float>& qn = bq.qn;
            const std::vector<QuantQuery>& qq = bq.qq;
            const std::vector<float>& eq = bq.eq;
            std::vector<float> sims(tile * n_);
            std::vector<std::uint32_t> sel(n_ + 16);
            std::vector<float> samp;
            std::vector<Cand> heap(k);
            CompactScan scans[2];  // query j's and query j + 1's (selected before j's re-rank)
            for (std::size_t t0 = 0; t0 < nq; t0 += tile) {
                const std::size_t nt = std::min(tile, nq - t0);
                for (std::size_t bi = 0; bi < blocks; ++bi) {
                    const std::size_t b = bi * kRowBlock, nb = std::min(kRowBlock, n_ - b);
                    K.dot_block_i8(qq.data() + t0, nt, c8_.data() + b * d_, scale_.data() + b, rowsum_.data() + b,
                                   nb, d_, sims.data() + b, n_, &packs[bi]);
                }
                auto select = [&](std::size_t j) -> CompactScan& {
                    CompactScan& sc = scans[j & 1];
                    sc.reset(k);
                    sc.select_all(K, sims.data() + j * n_, err_.data(), eq[t0 + j], n_, 0, sel.data(), samp);
                    sc.prepare();
                    return sc;
                };
                select(0);
                for (std::size_t j = 0; j < nt; ++j) {
                    // Query j + 1's candidates are selected first, so its rows stream into L2 while
                    // query j's re-rank sums its own (fetched the same way during query j - 1's).
                    detail::RowAhead ahead;
                    if (j + 1 < nt) {
                        const CompactScan& nx = select(j + 1);
                        ahead = detail::RowAhead{nx.cands.data(), nx.cands.size(), 0, data_.data(), d_};
                    }
                    TopK top;
                    top.reset(heap.data(), k);
                    reranked[qb + t0 + j] =
                        scans[j & 1].rerank(K, qn.data() + (t0 + j) * d_, data_.data(), d_, top, nullptr, nullptr, &ahead);
                    top.write(idx + (qb + t0 + j) * k, sim + (qb + t0 + j) * k);
                }
            }
        });
    } else {  // stream the row blocks: each block's similarities are offered at once
        parallel_for(B, threads, [&](std::size_t qb, std::size_t qe) {
            const std::size_t nq = qe - qb;
            const BatchQueries bq(Q + qb * d_, nq, d_, K.i8_batch_hi_max);
            const std::vector<float>& qn = bq.qn;
            const std::vector<QuantQuery>& qq = bq.qq;
            const std::vector<float>& eq = bq.eq;
            std::vector<CompactScan> scans(nq);
            for (auto& sc : scans) sc.reset(k);
            std::vector<float> block(kQueryTile * kRowBlock);
            std::vector<std::uint32_t> sel(kRowBlock + 16);
            I8Pack pack;
            for (std::size_t b = 0; b < n_; b += kRowBlock) {
                const std::size_t nb = std::min(kRowBlock, n_ - b);
                for (std::size_t t0 = 0; t0 < nq; t0 += kQueryTile) {
                    const std::size_t nt = std::min(kQueryTile, nq - t0);
                    K.dot_block_i8(qq.data() + t0, nt, c8_.data() + b * d_, scale_.data() + b, rowsum_.data() + b, nb, d_,
                                   block.data(), kRowBlock, &pack);
                    for (std::size_t j = 0; j < nt; ++j)
                        scans[t0 + j].offer(K, block.data() + j * kRowBlock, err_.data() + b, eq[t0 + j], nb, b, sel.data());
                }
            }
            std::vector<Cand> heap(k);
            for (std::size_t j = 0; j < nq; ++j) {
                TopK top;
                top.reset(heap.data(), k);
                reranked[qb + j] = scans[j].rerank(K, qn.data() + j * d_, data_.data(), d_, top);
                top.write(idx + (qb + j) * k, sim + (qb + j) * k);
            }
        });
    }
    std::size_t total = 0;
    for (std::size_t r : reranked) total += r;
    detail::set_last_rerank_count(total);
}


}  // namespace knnroute
