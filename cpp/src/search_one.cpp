// The single-query search: one range scan (float32 rows, or a compact copy then an exact re-rank),
// optionally split over the worker pool and merged.
#include <algorithm>
#include <cstring>
#include <functional>
#include <vector>

#include "compact_scan.hpp"
#include "knnroute/isa.hpp"
#include "knnroute/pool.hpp"
#include "knnroute/search.hpp"
#include "search_detail.hpp"
#include "topk.hpp"

namespace knnroute {

using detail::better;
using detail::Cand;
using detail::check_k;
using detail::kRowBlock;
using detail::kTwoPassRows;

namespace {
thread_local std::size_t t_rerank = 0;
// Below this many bytes scanned per query, one thread is faster than waking a worker (measured on
// the project's 2-core EPYC VM: a blocking wake-up costs ~10-30 us). float32 rows: 1 MiB (2 threads
// win from ~4 MiB: 1.10x at 5k x 384, 1.47x at 10k). Compact copies scan at L3 speed and each part
// re-ranks its own top k, so the split pays later: int8 at 10k x 384 (3.8 MiB) ran 0.87x with 2
// threads, 0.97x at 20k (7.7 MiB), 1.30x at 30k (11.5 MiB).
constexpr std::size_t kMinParallelScanBytes = std::size_t{1} << 20;
constexpr std::size_t kMinParallelCompactBytes = std::size_t{8} << 20;
}  // namespace

std::size_t last_rerank_count() { return t_rerank; }

void detail::set_last_rerank_count(std::size_t n) { t_rerank = n; }

using detail::CompactScan;
using detail::I8Refine;
using detail::quantize_query;
using detail::TopK;

void SupportSet::scan_range(const float* q, std::size_t k, std::size_t r0, std::size_t r1,
                            std::vector<Cand>& out, const RowPrefetch* side) const {
    const Kernels& K = kernels();
    const std::size_t kk = std::min(k, r1 - r0);
    static thread_local std::vector<Cand> heap;
    static thread_local std::vector<float> block;
    if (heap.size() < kk) heap.resize(kk);
    if (block.size() < kRowBlock) block.resize(kRowBlock);
    TopK top;
    top.reset(heap.data(), kk);
    if (precision_ == Precision::f32) {
        for (std::size_t b = r0; b < r1; b += kRowBlock) {
            const std::size_t nb = std::min(kRowBlock, r1 - b);
            K.dot_rows(q, data_.data() + b * d_, nb, d_, block.data());
            top.push_block(block.data(), nb, static_cast<std::int64_t>(b));
        }
        top.sorted_into(out);
        return;
    }
    static thread_local CompactScan scan;
    static thread_local std::vector<std::uint32_t> sel;  // rows passing the prefilter (+ 16: vector stores)
    const std::size_t nr = r1 - r0;
    // Up to kTwoPassRows rows, the approximate similarities of the whole range go to one buffer (<= 256 KiB,
    // cache resident) and the candidates are selected at once (CompactScan::select_all); beyond, block by
    // block (offer).
    const bool two_pass = nr <= kTwoPassRows;
    const std::size_t sel_need = (two_pass ? nr : kRowBlock) + 16;
    if (sel.size() < sel_need) sel.resize(sel_need);
    if (two_pass && block.size() < nr) block.resize(nr);
    scan.reset(kk);
    // int8: the query is quantised to two int8 digits. On the select_all path the scan reads the hi
    // digit alone (half the integer work of both: 6 instead of 12 vpdpbusd per 384-value row), with
    // the one-digit bound eq; the re-rank then tightens a candidate with both digits (I8Refine)
    // before paying for its float32 row. The streaming path scans with both digits.
    float eq = 0.f, eq2 = 0.f;
    QuantQuery qq{}, qq2{};
    const bool refine = two_pass && precision_ == Precision::int8;
    if (precision_ == Precision::int8) {
        static thread_local std::vector<std::int8_t> qs;
        static thread_local std::vector<std::uint8_t> qu;
        const std::size_t dp = (d_ + 63) & ~std::size_t{63};
        if (qs.size() != 3 * dp) {  // [hi | lo | zero digits]; quantize_query rewrites the first two
            qs.assign(3 * dp, std::int8_t{0});
            qu.assign(3 * dp, std::uint8_t{128});
        }
        float eq1 = 0.f;
        eq = eq2 = quantize_query(q, d_, dp, true, qs.data(), qu.data(), qq2, &eq1);
        qq = qq2;
        if (refine) {  // scan with the hi digit alone (lo -> the zero digit array), refine with both
            qq.lo = qs.data() + 2 * dp;
            qq.lo_u8 = qu.data() + 2 * dp;
            qq.two_digits = false;
            eq = eq1;
        }
    }
    for (std::size_t b = r0; b < r1; b += kRowBlock) {
        const std::size_t nb = std::min(kRowBlock, r1 - b);
        float* out = two_pass ? block.data() + (b - r0) : block.data();
        switch (precision_) {
            case Precision::bf16: K.dot_rows_bf16(q, c16_.data() + b * d_, nb, d_, out); break;
            case Precision::f16: K.dot_rows_f16(q, c16_.data() + b * d_, nb, d_, out); break;
            default:
                K.dot_rows_i8(qq, c8_.data() + b * d_, scale_.data() + b, rowsum_.data() + b, nb, d_, out);
                break;
        }
        if (!two_pass) scan.offer(K, out, err_.data() + b, eq, nb, b, sel.data());
    }
    if (two_pass) {
        static thread_local std::vector<float> samp;
        scan.select_all(K, block.data(), err_.data() + r0, eq, nr, r0, sel.data(), samp);
    }
    const I8Refine rf{&K, qq2, eq2, c8_.data(), scale_.data(), rowsum_.data(), err_.data(), d_};
    t_rerank += scan.rerank(K, q, data_.data(), d_, top, refine ? &rf : nullptr, side);
    top.sorted_into(out);
}

int SupportSet::threads_for_one() const {
    if (query_threads_ == 1) return 1;
    const int avail = pool_threads();
    if (avail <= 1) return 1;
    if (query_threads_ > 1) return std::min(query_threads_, avail);
    if (precision_ == Precision::f32) return n_ * d_ * sizeof(float) >= kMinParallelScanBytes ? avail : 1;
    return n_ * d_ * precision_value_bytes(precision_) >= kMinParallelCompactBytes ? avail : 1;
}

void SupportSet::search_one_normalized(const float* q, std::size_t k, std::int64_t* idx, float* sim,
                                       std::vector<float>& /*scratch*/, const RowPrefetch* side) const {
    check_k(k, n_);
    t_rerank = 0;
    static thread_local std::vector<Cand> merged;
    merged.clear();
    int T = threads_for_one();
    // Each part must hold whole row blocks and enough rows to be worth a wake-up.
    const std::size_t max_parts = std::max<std::size_t>(1, n_ / (4 * kRowBlock));
    if (static_cast<std::size_t>(T) > max_parts) T = static_cast<int>(max_parts);
    if (T > 64) T = 64;
    if (T > 1) {
        // Split rows into T contiguous, block-aligned parts; each part's sorted top-k goes to its own
        // buffer, then a k-way merge by (similarity desc, index asc) gives exactly the global top-k.
        static thread_local std::vector<std::vector<Cand>> parts;
        static thread_local std::vector<std::size_t> worker_rerank;
        if (parts.size() < static_cast<std::size_t>(T)) parts.resize(T);
        worker_rerank.assign(T, 0);
        const std::size_t blocks = (n_ + kRowBlock - 1) / kRowBlock;
        struct Ctx {
            const SupportSet* self;
            const float* q;
            std::size_t k, blocks, n;
            int T;
            std::vector<std::vector<Cand>>* parts;
            std::size_t* wr;
        } ctx{this, q, k, blocks, n_, T, &parts, worker_rerank.data()};
        const Ctx* c = &ctx;
        // One pointer captured: fits std::function's small buffer, so no allocation per query.
        const std::function<void(int)> task = [c](int t) {
            const std::size_t b0 = c->blocks * t / c->T, b1 = c->blocks * (t + 1) / c->T;
            const std::size_t r0 = b0 * kRowBlock, r1 = std::min(c->n, b1 * kRowBlock);
            (*c->parts)[t].clear();
            const std::size_t before = t_rerank;
            c->self->scan_range(c->q, c->k, r0, r1, (*c->parts)[t]);
            c->wr[t] = t_rerank - before;
        };
        if (pool_try_run(T, task)) {
            std::size_t total = 0;
            for (int t = 0; t < T; ++t) total += worker_rerank[t];
            t_rerank = total;
            // Merge the sorted parts (T is tiny): repeatedly take the best head.
            std::size_t pos[64] = {};
            for (std::size_t j = 0; j < k; ++j) {
                int best = -1;
                for (int t = 0; t < T; ++t) {
                    if (pos[t] >= parts[t].size()) continue;
                    if (best < 0 || better(parts[t][pos[t]], parts[best][pos[best]])) best = t;
                }
                const Cand& c = parts[best][pos[best]++];
                idx[j] = c.idx;
                sim[j] = c.sim;
            }
            return;
        }
    }
    scan_range(q, k, 0, n_, merged, side);
    for (std::size_t j = 0; j < k; ++j) {
        idx[j] = merged[j].idx;
        sim[j] = merged[j].sim;
    }
}

}  // namespace knnroute
