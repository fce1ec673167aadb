// The compact-copy (bf16 / f16 / int8) scan of one query: candidate selection by rigorous bounds
// (CompactScan stage 1) and the exact float32 re-rank (stage 2); int8 query quantisation and the
// two-digit refinement. Used by the single-query scan (search_one.cpp) and the int8 batch path
// (search_batch_int8.cpp). Internal to the search files.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "knnroute/isa.hpp"
#include "knnroute/search.hpp"
#include "topk.hpp"

namespace knnroute::detail {

// Quantises a unit query for the int8 scan: q ~ sq * (hi + lo / 254) (two digits) or q ~ sq * hi
// (one digit: lo = 0, the batch path, whose kernel reads only hi). Writes the s8/u8 digit arrays
// (padded to dp values with 0 / 128) and returns eq, a rigorous upper bound of ||q - q^||_2: the
// query's own rounding adds eq * |x^_r| <= eq * (1 + err_r) to row r's bound (Cauchy-Schwarz).
// eq_hi, if given, receives the same bound for the hi digit alone (q^ = sq * hi). hi_max (<= 127):
// the hi digits' range, [-hi_max, hi_max] (Kernels::i8_batch_hi_max on the batch path).
float quantize_query(const float* q, std::size_t d, std::size_t dp, bool two_digits, std::int8_t* qs,
                     std::uint8_t* qu, QuantQuery& out, float* eq_hi = nullptr, int hi_max = 127);

// A one-digit int8 scan's second chance: the two-digit approximation of one row (the value a
// two-digit scan gives, dot_rows_i8 with q2) and its tighter upper bound a2 + err + eq2 (1 + err).
// The re-rank asks for it before paying a float32 row: 384 bytes read instead of 1,536.
struct I8Refine {
    const Kernels* K;
    QuantQuery q2;
    float eq2;
    const std::int8_t* c8;
    const float* scale;
    const std::int32_t* rowsum;
    const float* err;
    std::size_t d;
    float ub(std::int64_t row) const {
        const std::size_t r = static_cast<std::size_t>(row);
        float a2;
        K->dot_rows_i8(q2, c8 + r * d, scale + r, rowsum + r, 1, d, &a2);
        return a2 + (err[r] + eq2 * (1.f + err[r]));
    }
};

// The r-th largest of v (1 <= r <= v.size()). Small r (the common case: r = 14 of ~600 samples for
// k = 100 at 10k rows): a sorted buffer of the r largest so far; after the first few hundred values
// almost every value fails the one compare with the buffer's last, a well-predicted branch, where
// std::nth_element mispredicts about every other comparison (5 us against < 1 us here). Larger r:
// nth_element (v is reordered).
inline float rth_largest(std::vector<float>& v, std::size_t r) {
    constexpr std::size_t kBuf = 32;
    if (r > kBuf) {
        std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(r - 1), v.end(), std::greater<float>());
        return v[r - 1];
    }
    float buf[kBuf];
    std::size_t held = 0;
    for (const float x : v) {
        if (held == r && !(x > buf[r - 1])) continue;
        std::size_t j = held < r ? held++ : r - 1;  // the slot freed (the last one, if full)
        while (j > 0 && buf[j - 1] < x) {
            buf[j] = buf[j - 1];
            --j;
        }
        buf[j] = x;
    }
    return buf[r - 1];
}

// Rows another query will re-rank next (the batch path): its candidates, best first after prepare(),
// prefetched into L2 a few at a time while this query's re-rank runs, so that the next one reads them
// from cache instead of waiting on memory row after row.
struct RowAhead {
    const Cand* c = nullptr;
    std::size_t n = 0, pos = 0;
    const float* data = nullptr;
    std::size_t d = 0;
    void step(std::size_t rows) {
        const std::size_t bytes = d * sizeof(float);
        for (std::size_t e = std::min(n, pos + rows); pos < e; ++pos) {
            const char* p = reinterpret_cast<const char*>(data + static_cast<std::size_t>(c[pos].idx) * d);
            for (std::size_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 2);
        }
    }
};

// Stage 1 of a compact-copy scan for one query. T: the running threshold, the kk-th largest lower
// bound among those kept in lbs (so never above the kk-th largest lower bound seen, a valid cut);
// cands: rows whose upper bound reached T when seen, pruned when the buffer grows. Every true top-kk
// row ends in cands (its upper bound is never below the final T), so an exact re-rank of cands gives
// the exact top-kk.
//
// lbs is an unsorted buffer, not a heap: lower bounds above T are appended, and when it holds 2 kk of
// them an nth_element keeps the kk largest and raises T to the kk-th. That is O(1) amortised per
// passing row, against a heap's log2(kk) sift with unpredictable branches per row (the heap was the
// largest single cost of the batch path's bookkeeping in a perf profile). T rises in steps rather
// than per row, which lets slightly more rows into cands; the re-rank prunes them.
struct CompactScan {
    std::vector<float> lbs;
    std::vector<Cand> cands;  // (upper bound, row)
    std::size_t kk = 0, cap = 0;
    float T = -std::numeric_limits<float>::infinity();
    std::size_t first = 0;  // after prepare(): cands[0, first) are the first to re-rank
    bool prepared = false;

    void reset(std::size_t k) {
        prepared = false;
        lbs.clear();
        cands.clear();
        kk = k;
        cap = std::max<std::size_t>(4 * kk, 1024);
        T = -std::numeric_limits<float>::infinity();
        lbs.reserve(2 * kk);
    }
    // Keeps the kk largest buffered lower bounds and sets T to the kk-th (needs lbs.size() >= kk).
    void tighten() {
        std::nth_element(lbs.begin(), lbs.begin() + static_cast<std::ptrdiff_t>(kk - 1), lbs.end(),
                         std::greater<float>());
        T = std::max(T, lbs[kk - 1]);
        lbs.resize(kk);
    }
    // a: approximate similarities of rows [b, b + nb); err: those rows' error norms; eq: the query's
    // quantisation error (0 for bf16/f16); sel: scratch of nb + 16 entries.
    void offer(const Kernels& K, const float* a, const float* err, float eq, std::size_t nb, std::size_t b,
               std::uint32_t* sel) {
        // SIMD prefilter at the block's starting T (T only rises, so this passes a superset), then the
        // exact per-row test below at the current T: most blocks leave a handful of rows, or none.
        const std::size_t ns = K.select_ub(a, err, eq, T, nb, sel);
        for (std::size_t si = 0; si < ns; ++si) {
            const std::size_t i = sel[si];
            const float e = err[i] + eq * (1.f + err[i]);
            const float ub = a[i] + e;
            if (ub < T) continue;
            const float lb = a[i] - e;
            if (lb > T) {
                lbs.push_back(lb);
                if (lbs.size() >= 2 * kk) tighten();
            }
            cands.push_back(Cand{ub, static_cast<std::int64_t>(b + i)});
            if (cands.size() >= cap) {
                std::size_t w = 0;
                for (const Cand& c : cands)
                    if (c.sim >= T) cands[w++] = c;
                cands.resize(w);
                if (2 * w > cap) cap *= 2;
            }
        }
    }
    // Stage 1 in one go, for a query whose approximate similarities a[0, n) of every row are known
    // (the batch path). T is set from a strided sample of the lower bounds: its r-th largest, r about
    // 2 kk / kSample, usually a little below the true kk-th largest lower bound L; it is checked by
    // counting the rows whose lower bound reaches it (>= kk rows means T <= L, so T is a valid cut),
    // and lowered (4x the rank, then -inf: every row) if not. Then one SIMD pass selects every row
    // whose upper bound reaches T. No per-row heap or buffer: the streaming scan's bookkeeping (a third
    // of the batch time in a profile) becomes two vector passes and a small nth_element.
    void select_all(const Kernels& K, const float* a, const float* err, float eq, std::size_t n, std::size_t base,
                    std::uint32_t* sel, std::vector<float>& samp) {
        constexpr std::size_t kSample = 16;
        const float neg_inf = -std::numeric_limits<float>::infinity();
        auto lb = [&](std::size_t i) { return a[i] - (err[i] + eq * (1.f + err[i])); };
        samp.clear();
        for (std::size_t i = kSample / 2; i < n; i += kSample) samp.push_back(lb(i));
        // A row whose lower bound reaches t also has its upper bound above t, so the rows selected
        // at t hold every row to count: the check costs a pass over the few selected rows, not all n.
        std::size_t ns = 0;
        T = neg_inf;
        for (std::size_t rank = 2 * ((kk + kSample - 1) / kSample); rank <= samp.size(); rank *= 4) {
            const float t = rth_largest(samp, rank);
            ns = K.select_ub(a, err, eq, t, n, sel);
            std::size_t cnt = 0;
            for (std::size_t si = 0; si < ns; ++si) cnt += lb(sel[si]) >= t;
            if (cnt >= kk) {
                T = t;
                break;
            }
        }
        if (T == neg_inf) ns = K.select_ub(a, err, eq, T, n, sel);
        cands.resize(ns);
        for (std::size_t si = 0; si < ns; ++si) {
            const std::size_t i = sel[si];
            cands[si] = Cand{a[i] + (err[i] + eq * (1.f + err[i])), static_cast<std::int64_t>(base + i)};
        }
    }
    // Stage 2: exact float32 similarities (the same kernel as the f32 scan, so bit-identical) of the
    // candidates that can still enter the top-kk, into top. Returns the number re-ranked.
    //
    // Best first: the kk candidates with the largest upper bounds are re-ranked first (nth_element);
    // they nearly always hold most of the exact top-kk, so the kk-th best exact similarity S held after
    // them is high. A remaining candidate is re-ranked only if its upper bound reaches the current S:
    // a row with ub < S has exact similarity <= ub < S <= the final kk-th best, so it cannot enter.
    // That prunes the rows whose bound interval straddles T but not S (T <= S: T is a kk-th largest
    // lower bound). Exact under the same rounding-safe bounds as the scan.
    //
    // prepare(): the final T, the candidates that reach it, the kk best upper bounds first (called by
    // rerank if not before; the batch path calls it early to prefetch the rows). ahead: another
    // query's rows to prefetch, as many as this re-rank sums.
    void prepare() {
        if (lbs.size() > kk) tighten();  // the final T from every buffered lower bound
        std::size_t w = 0;
        for (const Cand& c : cands)
            if (c.sim >= T) cands[w++] = c;
        cands.resize(w);
        first = std::min(kk, w);
        if (w > first)
            std::nth_element(cands.begin(), cands.begin() + static_cast<std::ptrdiff_t>(first), cands.end(),
                             [](const Cand& a, const Cand& b) { return a.sim > b.sim; });
        prepared = true;
    }
    std::size_t rerank(const Kernels& K, const float* q, const float* data, std::size_t d, TopK& top,
                       const I8Refine* refine = nullptr, const RowPrefetch* side = nullptr, RowAhead* ahead = nullptr) {
        if (!prepared) prepare();
        const std::size_t w = cands.size();
        const std::size_t row_bytes = d * sizeof(float);
        auto fetch = [&](std::size_t ci) {  // rows are scattered: fetch ahead while others are summed
            const char* nx = reinterpret_cast<const char*>(data + static_cast<std::size_t>(cands[ci].idx) * d);
            for (std::size_t off = 0; off < row_bytes; off += 64) __builtin_prefetch(nx + off);
        };
        // Exact similarities of up to 4 rows at once (dot_ptrs: four independent FMA chains, each
        // bit for bit the row kernel), pushed into top.
        const float* rows[4];
        std::int64_t ids[4];
        float sims[4];
        auto exact = [&](std::size_t m) {
            if (side) {  // the caller's side-table rows for these rows (see RowPrefetch)
                const std::size_t bytes = side->row_floats * sizeof(float);
                for (std::size_t t = 0; t < m; ++t)
                    for (const float* tb : side->table) {
                        const char* p = reinterpret_cast<const char*>(tb + static_cast<std::size_t>(ids[t]) * side->row_floats);
                        __builtin_prefetch(p);
                        __builtin_prefetch(p + bytes - 1);
                    }
            }
            if (ahead) ahead->step(m);
            K.dot_ptrs(q, rows, m, d, sims);
            for (std::size_t t = 0; t < m; ++t) top.push_any(sims[t], ids[t]);
        };
        auto take = [&](std::size_t m, const Cand& c) {
            ids[m] = c.idx;
            rows[m] = data + static_cast<std::size_t>(c.idx) * d;
        };
        // The batch path (ahead given; its rows were prefetched into L2): 4 rows at a time, the next 4
        // fetched. The single-query path: one row at a time, 2 ahead, as before (grouped, with its rows
        // coming from memory, its int8 scan measured 5-16% slower at avx512 and avx512-vnni).
        const std::size_t G = ahead ? 4 : 1, D = ahead ? 4 : 2;
        if (ahead)
            for (std::size_t t = 0; t < std::min(D, first); ++t) fetch(t);
        for (std::size_t ci = 0; ci < first; ci += G) {
            const std::size_t m = std::min(G, first - ci);
            for (std::size_t t = ci + D; t < std::min(ci + D + m, first); ++t) fetch(t);
            for (std::size_t t = 0; t < m; ++t) take(t, cands[ci + t]);
            exact(m);
        }
        std::size_t done = first;
        // The rest: compact the survivors of the current S first, so the prefetch runs ahead on them;
        // then G at a time, S refreshed after each group (a stale S only lets a row through).
        float S = top.size() >= kk ? top.worst() : -std::numeric_limits<float>::infinity();
        std::size_t r = first;
        for (std::size_t ci = first; ci < w; ++ci)
            if (cands[ci].sim >= S) cands[r++] = cands[ci];
        if (ahead)
            for (std::size_t t = first; t < std::min(first + D, r); ++t) fetch(t);
        std::size_t m = 0;
        for (std::size_t ci = first; ci < r; ++ci) {
            if (cands[ci].sim < S) continue;  // S rose since the compaction
            if (refine && refine->ub(cands[ci].idx) < S) continue;  // the tighter bound prunes it
            if (ci + D < r) fetch(ci + D);
            take(m++, cands[ci]);
            if (m == G) {
                exact(m);
                done += m;
                m = 0;
                S = top.worst();
            }
        }
        if (m > 0) {
            exact(m);
            done += m;
        }
        return done;
    }
};

}  // namespace knnroute::detail
