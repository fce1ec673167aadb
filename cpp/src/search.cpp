// Exact cosine top-k: similarity kernels (isa.hpp) + a bounded heap with a deterministic tie rule.
#include "knnroute/search.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <stdexcept>
#include <cstring>
#include <string>
#include <thread>

#include "knnroute/isa.hpp"
#include "knnroute/pool.hpp"

namespace knnroute {

namespace {

// Rows per block of similarities: small enough to stay in L1/L2 between the kernel and the selection.
constexpr std::size_t kRowBlock = 256;
// Single-query compact scans of at most this many rows buffer every approximate similarity (256 KiB)
// and select their candidates in one pass; longer ranges are consumed block by block.
constexpr std::size_t kTwoPassRows = std::size_t{1} << 16;
// Queries per tile on the batch path (each base block is reused from cache by a whole tile).
constexpr std::size_t kQueryTile = 16;
// Below this many queries a batch stays on the calling thread.
constexpr std::size_t kMinParallelBatch = 4;

using Cand = Neighbor;

// Replaces the top of a heap (ordered by comp, as std::push_heap builds it) with v and restores the
// heap by one sift-down: half the work of pop_heap + push_heap, and the same held set (the top is
// always the unique worst element under a strict total order).
template <class T, class Comp>
inline void replace_top(T* h, std::size_t n, const T& v, Comp comp) {
    std::size_t i = 0;
    for (;;) {
        std::size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && comp(h[c], h[c + 1])) ++c;  // the child that should be nearer the top
        if (!comp(v, h[c])) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = v;
}

// "a ranks before b": higher similarity, then lower index.
inline bool better(const Cand& a, const Cand& b) { return a.sim > b.sim || (a.sim == b.sim && a.idx < b.idx); }

// Bounded selection of the k best candidates. Candidates must arrive in increasing index order, so
// an equal similarity never displaces an already-held (lower) index: a strict '>' test suffices.
class TopK {
public:
    void reset(Cand* buf, std::size_t k) {
        h_ = buf;
        k_ = k;
        size_ = 0;
    }
    void push_block(const float* sims, std::size_t n, std::int64_t first_idx) {
        std::size_t i = 0;
        // Fill phase.
        for (; i < n && size_ < k_; ++i) {
            h_[size_++] = Cand{sims[i], first_idx + static_cast<std::int64_t>(i)};
            std::push_heap(h_, h_ + size_, better);  // heap top = worst held candidate
        }
        if (i == n) return;
        float worst = h_[0].sim;
        for (; i < n; ++i) {
            // Most blocks of 16 hold nothing better than the worst held candidate: test them with a
            // branch-free (vectorisable) count before the per-element loop.
            if ((i & 15) == 0 && i + 16 <= n) {
                int hits = 0;
                for (std::size_t t = 0; t < 16; ++t) hits += sims[i + t] > worst;
                if (hits == 0) {
                    i += 15;
                    continue;
                }
            }
            if (sims[i] > worst) {
                replace_top(h_, size_, Cand{sims[i], first_idx + static_cast<std::int64_t>(i)}, better);
                worst = h_[0].sim;
            }
        }
    }
    // One candidate, in any index order (ties are broken by the full order, lower index first).
    void push_any(float s, std::int64_t id) {
        const Cand c{s, id};
        if (size_ < k_) {
            h_[size_++] = c;
            std::push_heap(h_, h_ + size_, better);
        } else if (better(c, h_[0])) {
            replace_top(h_, size_, c, better);
        }
    }
    std::size_t size() const { return size_; }
    // The worst held similarity (the k-th best so far once k are held).
    float worst() const { return h_[0].sim; }
    // Sorts the held candidates best first and appends them to out.
    void sorted_into(std::vector<Cand>& out) {
        sort_best_first();
        out.insert(out.end(), h_, h_ + size_);
    }
    void write(std::int64_t* idx, float* sim) {
        sort_best_first();
        for (std::size_t j = 0; j < size_; ++j) {
            idx[j] = h_[j].idx;
            sim[j] = h_[j].sim;
        }
    }

private:
    // The order of `better`, as a sort of 64-bit keys (similarity descending in the high half, index
    // ascending in the low half): one integer compare per step instead of a float compare plus a tie
    // test, about twice as fast for k = 100. Falls back to `better` where the key cannot represent the
    // order exactly: an index outside [0, 2^32), or a similarity of +-0 (equal under `better`, but not
    // as bit patterns).
    void sort_best_first() {
        static thread_local std::vector<std::uint64_t> keys;
        keys.resize(size_);
        for (std::size_t j = 0; j < size_; ++j) {
            const float s = h_[j].sim;
            const std::int64_t id = h_[j].idx;
            if (s == 0.f || id < 0 || id > std::int64_t{0xffffffff}) {
                std::sort(h_, h_ + size_, better);
                return;
            }
            std::uint32_t u;
            std::memcpy(&u, &s, 4);
            u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // increasing in s
            keys[j] = (static_cast<std::uint64_t>(~u) << 32) | static_cast<std::uint32_t>(id);
        }
        std::sort(keys.begin(), keys.end());
        for (std::size_t j = 0; j < size_; ++j) {
            std::uint32_t u = ~static_cast<std::uint32_t>(keys[j] >> 32);
            u = (u & 0x80000000u) ? (u & 0x7fffffffu) : ~u;  // the inverse map
            float s;
            std::memcpy(&s, &u, 4);
            h_[j] = Cand{s, static_cast<std::int64_t>(keys[j] & 0xffffffffu)};
        }
    }

    Cand* h_ = nullptr;
    std::size_t k_ = 0, size_ = 0;
};

void check_k(std::size_t k, std::size_t n) {
    if (n == 0) throw std::invalid_argument("the support set is empty: add at least one row before searching");
    if (k < 1 || k > n)
        throw std::invalid_argument("k must be in [1, " + std::to_string(n) + "] (the support size), got " +
                                    std::to_string(k));
}

}  // namespace

int batch_threads(std::size_t B, int n_threads) {
    if (B < kMinParallelBatch) return 1;
    int t = n_threads;
    if (t <= 0) {
        unsigned hc = std::thread::hardware_concurrency();
        t = hc == 0 ? 1 : static_cast<int>(hc);
    }
    return std::max(1, std::min<int>(t, static_cast<int>((B + 1) / 2)));
}

void check_rows(const float* X, std::size_t n, std::size_t d, const char* what) {
    if (d == 0) throw std::invalid_argument(std::string(what) + " has dimension 0");
    for (std::size_t i = 0; i < n; ++i) {
        const float* x = X + i * d;
        // Branch-free integer tests per row (vectorisable): all exponent bits set means NaN or
        // infinity; a finite row has norm 0 exactly when every value is +-0.
        std::uint32_t nonfinite = 0, nonzero = 0;
        for (std::size_t j = 0; j < d; ++j) {
            std::uint32_t u;
            std::memcpy(&u, x + j, 4);
            nonfinite |= static_cast<std::uint32_t>((u & 0x7f800000u) == 0x7f800000u);
            nonzero |= u & 0x7fffffffu;
        }
        if (nonfinite)
            throw std::invalid_argument(std::string(what) + " row " + std::to_string(i) +
                                        " has a NaN or infinite value; clean or drop that row");
        if (!nonzero)
            throw std::invalid_argument(std::string(what) + " row " + std::to_string(i) +
                                        " is a zero vector, which has no cosine similarity; drop it or re-embed");
    }
}

void normalize_rows(const float* X, std::size_t n, std::size_t d, float* out) {
    for (std::size_t i = 0; i < n; ++i) {
        const float* x = X + i * d;
        double ss = 0.0;
        for (std::size_t j = 0; j < d; ++j) ss += static_cast<double>(x[j]) * x[j];
        const double inv = 1.0 / std::sqrt(ss);
        // Idempotent: a row already unit to float precision is kept bit for bit, so saving and
        // re-loading normalised rows (or normalising twice) never perturbs similarities.
        if (std::fabs(inv - 1.0) < 1e-6) {
            if (out + i * d != x) std::copy(x, x + d, out + i * d);
            continue;
        }
        for (std::size_t j = 0; j < d; ++j) out[i * d + j] = static_cast<float>(x[j] * inv);
    }
}

SupportSet::SupportSet(const float* X, std::size_t n, std::size_t d) : SupportSet(X, n, d, Precision::f32, 0) {}

SupportSet::SupportSet(const float* X, std::size_t n, std::size_t d, Precision precision, int query_threads)
    : n_(n), d_(d), precision_(precision), query_threads_(query_threads < 0 ? 0 : query_threads) {
    if (d == 0) throw std::invalid_argument("embeddings have dimension 0");
    check_rows(X, n, d, "embeddings");
    data_.resize(n * d);
    normalize_rows(X, n, d, data_.data());
    encode_tail(0);
}

void SupportSet::encode_tail(std::size_t from) {
    if (precision_ == Precision::f32) return;
    const std::size_t add = n_ - from;
    err_.resize(n_);
    if (precision_ == Precision::int8) {
        c8_.resize(n_ * d_);
        scale_.resize(n_);
        rowsum_.resize(n_);
        encode_rows(precision_, data_.data() + from * d_, add, d_, nullptr, c8_.data() + from * d_,
                    scale_.data() + from, err_.data() + from);
        for (std::size_t i = from; i < n_; ++i) {
            std::int32_t t = 0;
            for (std::size_t j = 0; j < d_; ++j) t += c8_[i * d_ + j];
            rowsum_[i] = t;
        }
    } else {
        c16_.resize(n_ * d_);
        encode_rows(precision_, data_.data() + from * d_, add, d_, c16_.data() + from * d_, nullptr, nullptr,
                    err_.data() + from);
    }
}

std::size_t SupportSet::memory_bytes() const {
    return data_.size() * sizeof(float) + c16_.size() * 2 + c8_.size() +
           (scale_.size() + err_.size() + rowsum_.size()) * sizeof(float);
}

void SupportSet::add(const float* X, std::size_t n) {
    check_rows(X, n, d_, "new embeddings");
    data_.resize((n_ + n) * d_);
    normalize_rows(X, n, d_, data_.data() + n_ * d_);
    const std::size_t from = n_;
    n_ += n;
    encode_tail(from);
}

void SupportSet::remove(const std::vector<std::int64_t>& rows) {
    std::size_t w = 0, r = 0, next = 0;
    for (; r < n_; ++r) {
        if (next < rows.size() && rows[next] == static_cast<std::int64_t>(r)) {
            ++next;
            continue;
        }
        if (w != r) {
            std::copy(data_.begin() + r * d_, data_.begin() + (r + 1) * d_, data_.begin() + w * d_);
            if (!c16_.empty()) std::copy(c16_.begin() + r * d_, c16_.begin() + (r + 1) * d_, c16_.begin() + w * d_);
            if (!c8_.empty()) std::copy(c8_.begin() + r * d_, c8_.begin() + (r + 1) * d_, c8_.begin() + w * d_);
            if (!scale_.empty()) scale_[w] = scale_[r];
            if (!rowsum_.empty()) rowsum_[w] = rowsum_[r];
            if (!err_.empty()) err_[w] = err_[r];
        }
        ++w;
    }
    n_ = w;
    data_.resize(n_ * d_);
    if (!c16_.empty()) c16_.resize(n_ * d_);
    if (!c8_.empty()) c8_.resize(n_ * d_);
    if (!scale_.empty()) scale_.resize(n_);
    if (!rowsum_.empty()) rowsum_.resize(n_);
    if (!err_.empty()) err_.resize(n_);
}

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

namespace {

// Quantises a unit query for the int8 scan: q ~ sq * (hi + lo / 254) (two digits) or q ~ sq * hi
// (one digit: lo = 0, the batch path, whose kernel reads only hi). Writes the s8/u8 digit arrays
// (padded to dp values with 0 / 128) and returns eq, a rigorous upper bound of ||q - q^||_2: the
// query's own rounding adds eq * |x^_r| <= eq * (1 + err_r) to row r's bound (Cauchy-Schwarz).
// eq_hi, if given, receives the same bound for the hi digit alone (q^ = sq * hi).
float quantize_query(const float* q, std::size_t d, std::size_t dp, bool two_digits, std::int8_t* qs,
                     std::uint8_t* qu, QuantQuery& out, float* eq_hi = nullptr) {
    std::fill(qs, qs + 2 * dp, std::int8_t{0});
    std::fill(qu, qu + 2 * dp, std::uint8_t{128});
    float m4[4] = {0.f, 0.f, 0.f, 0.f};  // four lanes: a sequential max is latency-bound
    for (std::size_t j = 0; j < d; ++j) m4[j & 3] = std::max(m4[j & 3], std::fabs(q[j]));
    const float mx = std::max(std::max(m4[0], m4[1]), std::max(m4[2], m4[3]));
    const float sq = mx > 0.f ? mx / 127.f : 1.f;
    // The digits only need to be near q / sq (any choice is exact under the bound below), so the
    // divisions are multiplications; the residuals are summed in four lanes (this loop is
    // latency-bound otherwise, and it runs once per query). The bound is the computed norm of the
    // actual residual, to within the relative 1e-6 added below.
    const double inv = 1.0 / static_cast<double>(sq), dsq = sq, inv254 = 1.0 / 254.0;
    double e2[4] = {0.0, 0.0, 0.0, 0.0}, e2h[4] = {0.0, 0.0, 0.0, 0.0};
    std::int32_t hs = 0;
    for (std::size_t j0 = 0; j0 < d; j0 += 4) {
        for (std::size_t t = 0; t < 4 && j0 + t < d; ++t) {
            const std::size_t j = j0 + t;
            const double v = static_cast<double>(q[j]) * inv;
            const long hi = std::min(127L, std::max(-127L, std::lrint(v)));
            const long lo = two_digits ? std::min(127L, std::max(-127L, std::lrint((v - hi) * 254.0))) : 0L;
            qs[j] = static_cast<std::int8_t>(hi);
            qs[dp + j] = static_cast<std::int8_t>(lo);
            qu[j] = static_cast<std::uint8_t>(hi + 128);
            qu[dp + j] = static_cast<std::uint8_t>(lo + 128);
            hs += static_cast<std::int32_t>(hi);
            const double rh = static_cast<double>(q[j]) - dsq * static_cast<double>(hi);
            const double r = rh - dsq * (static_cast<double>(lo) * inv254);
            e2[t] += r * r;
            e2h[t] += rh * rh;
        }
    }
    out = QuantQuery{qs, qs + dp, qu, qu + dp, sq, hs, two_digits};
    auto bound = [](const double* e) {
        return static_cast<float>(std::sqrt((e[0] + e[1]) + (e[2] + e[3])) * (1.0 + 1e-6) + 1e-9);
    };
    if (eq_hi) *eq_hi = bound(e2h);
    return bound(e2);
}

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

    void reset(std::size_t k) {
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
    std::size_t rerank(const Kernels& K, const float* q, const float* data, std::size_t d, TopK& top,
                       const I8Refine* refine = nullptr, const RowPrefetch* side = nullptr) {
        if (lbs.size() > kk) tighten();  // the final T from every buffered lower bound
        std::size_t w = 0;
        for (const Cand& c : cands)
            if (c.sim >= T) cands[w++] = c;
        cands.resize(w);
        const std::size_t first = std::min(kk, w);
        if (w > first)
            std::nth_element(cands.begin(), cands.begin() + static_cast<std::ptrdiff_t>(first), cands.end(),
                             [](const Cand& a, const Cand& b) { return a.sim > b.sim; });
        const std::size_t row_bytes = d * sizeof(float);
        auto fetch = [&](std::size_t ci) {  // rows are scattered: fetch ahead while another is summed
            const char* nx = reinterpret_cast<const char*>(data + static_cast<std::size_t>(cands[ci].idx) * d);
            for (std::size_t off = 0; off < row_bytes; off += 64) __builtin_prefetch(nx + off);
        };
        auto exact = [&](const Cand& c) {
            if (side) {  // the caller's side-table rows for this row (see RowPrefetch)
                const std::size_t bytes = side->row_floats * sizeof(float);
                for (const float* t : side->table) {
                    const char* p = reinterpret_cast<const char*>(t + static_cast<std::size_t>(c.idx) * side->row_floats);
                    __builtin_prefetch(p);
                    __builtin_prefetch(p + bytes - 1);
                }
            }
            float s;
            K.dot_rows(q, data + static_cast<std::size_t>(c.idx) * d, 1, d, &s);
            top.push_any(s, c.idx);
        };
        for (std::size_t ci = 0; ci < first; ++ci) {
            if (ci + 2 < first) fetch(ci + 2);
            exact(cands[ci]);
        }
        std::size_t done = first;
        // The rest: compact the survivors of the current S first, so the prefetch runs ahead on them.
        float S = top.size() >= kk ? top.worst() : -std::numeric_limits<float>::infinity();
        std::size_t r = first;
        for (std::size_t ci = first; ci < w; ++ci)
            if (cands[ci].sim >= S) cands[r++] = cands[ci];
        for (std::size_t ci = first; ci < r; ++ci) {
            if (cands[ci].sim < S) continue;  // S rose since the compaction
            if (refine && refine->ub(cands[ci].idx) < S) continue;  // the tighter bound prunes it
            if (ci + 2 < r) fetch(ci + 2);
            exact(cands[ci]);
            ++done;
            S = top.worst();
        }
        return done;
    }
};

}  // namespace

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

void SupportSet::search(const float* Q, std::size_t B, std::size_t k, std::int64_t* idx, float* sim,
                        int n_threads) const {
    check_k(k, n_);
    if (B == 0) return;
    check_rows(Q, B, d_, "queries");
    t_rerank = 0;
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

namespace {
// One chunk of batch queries, normalised and quantised to one int8 digit (the batch kernels read only
// hi): the digit buffers, their QuantQuery views and each query's bound eq.
struct BatchQueries {
    std::vector<float> qn;
    std::vector<std::int8_t> qs;
    std::vector<std::uint8_t> qu;
    std::vector<QuantQuery> qq;
    std::vector<float> eq;
    BatchQueries(const float* Q, std::size_t nq, std::size_t d)
        : qn(nq * d), qs(nq * 2 * padded(d)), qu(qs.size()), qq(nq), eq(nq) {
        const std::size_t dp = padded(d);
        normalize_rows(Q, nq, d, qn.data());
        for (std::size_t j = 0; j < nq; ++j)
            eq[j] = quantize_query(qn.data() + j * d, d, dp, false, qs.data() + j * 2 * dp, qu.data() + j * 2 * dp,
                                   qq[j]);
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
            const BatchQueries bq(Q + qb * d_, nq, d_);
            const std::vector<float>& qn = bq.qn;
            const std::vector<QuantQuery>& qq = bq.qq;
            const std::vector<float>& eq = bq.eq;
            std::vector<float> sims(tile * n_);
            std::vector<std::uint32_t> sel(n_ + 16);
            std::vector<float> samp;
            std::vector<Cand> heap(k);
            CompactScan scan;
            for (std::size_t t0 = 0; t0 < nq; t0 += tile) {
                const std::size_t nt = std::min(tile, nq - t0);
                for (std::size_t bi = 0; bi < blocks; ++bi) {
                    const std::size_t b = bi * kRowBlock, nb = std::min(kRowBlock, n_ - b);
                    K.dot_block_i8(qq.data() + t0, nt, c8_.data() + b * d_, scale_.data() + b, rowsum_.data() + b,
                                   nb, d_, sims.data() + b, n_, &packs[bi]);
                }
                for (std::size_t j = 0; j < nt; ++j) {
                    scan.reset(k);
                    scan.select_all(K, sims.data() + j * n_, err_.data(), eq[t0 + j], n_, 0, sel.data(), samp);
                    TopK top;
                    top.reset(heap.data(), k);
                    reranked[qb + t0 + j] = scan.rerank(K, qn.data() + (t0 + j) * d_, data_.data(), d_, top);
                    top.write(idx + (qb + t0 + j) * k, sim + (qb + t0 + j) * k);
                }
            }
        });
    } else {  // stream the row blocks: each block's similarities are offered at once
        parallel_for(B, threads, [&](std::size_t qb, std::size_t qe) {
            const std::size_t nq = qe - qb;
            const BatchQueries bq(Q + qb * d_, nq, d_);
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
    t_rerank = total;
}

}  // namespace knnroute
