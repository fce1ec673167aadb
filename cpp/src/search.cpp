// Exact cosine top-k: similarity kernels (isa.hpp) + a bounded heap with a deterministic tie rule.
#include "knnroute/search.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <thread>

#include "knnroute/isa.hpp"

namespace knnroute {

namespace {

// Rows per block of similarities: small enough to stay in L1/L2 between the kernel and the selection.
constexpr std::size_t kRowBlock = 256;
// Queries per tile on the batch path (each base block is reused from cache by a whole tile).
constexpr std::size_t kQueryTile = 16;
// Below this many queries a batch stays on the calling thread.
constexpr std::size_t kMinParallelBatch = 4;

struct Cand {
    float sim;
    std::int64_t idx;
};

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
            if (sims[i] > worst) {
                std::pop_heap(h_, h_ + size_, better);
                h_[size_ - 1] = Cand{sims[i], first_idx + static_cast<std::int64_t>(i)};
                std::push_heap(h_, h_ + size_, better);
                worst = h_[0].sim;
            }
        }
    }
    void write(std::int64_t* idx, float* sim) {
        std::sort(h_, h_ + size_, better);
        for (std::size_t j = 0; j < size_; ++j) {
            idx[j] = h_[j].idx;
            sim[j] = h_[j].sim;
        }
    }

private:
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
        double ss = 0.0;
        for (std::size_t j = 0; j < d; ++j) {
            if (!std::isfinite(x[j]))
                throw std::invalid_argument(std::string(what) + " row " + std::to_string(i) +
                                            " has a NaN or infinite value; clean or drop that row");
            ss += static_cast<double>(x[j]) * x[j];
        }
        if (ss == 0.0)
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

SupportSet::SupportSet(const float* X, std::size_t n, std::size_t d) : n_(n), d_(d) {
    if (d == 0) throw std::invalid_argument("embeddings have dimension 0");
    check_rows(X, n, d, "embeddings");
    data_.resize(n * d);
    normalize_rows(X, n, d, data_.data());
}

void SupportSet::add(const float* X, std::size_t n) {
    check_rows(X, n, d_, "new embeddings");
    data_.resize((n_ + n) * d_);
    normalize_rows(X, n, d_, data_.data() + n_ * d_);
    n_ += n;
}

void SupportSet::remove(const std::vector<std::int64_t>& rows) {
    std::size_t w = 0, r = 0, next = 0;
    for (; r < n_; ++r) {
        if (next < rows.size() && rows[next] == static_cast<std::int64_t>(r)) {
            ++next;
            continue;
        }
        if (w != r) std::copy(data_.begin() + r * d_, data_.begin() + (r + 1) * d_, data_.begin() + w * d_);
        ++w;
    }
    n_ = w;
    data_.resize(n_ * d_);
}

void SupportSet::search_one_normalized(const float* q, std::size_t k, std::int64_t* idx, float* sim,
                                       std::vector<float>& scratch) const {
    check_k(k, n_);
    const Kernels& K = kernels();
    // scratch holds one block of similarities; the heap is per thread and grows once.
    static thread_local std::vector<Cand> heap;
    if (heap.size() < k) heap.resize(k);
    if (scratch.size() < kRowBlock) scratch.resize(kRowBlock);
    TopK top;
    top.reset(heap.data(), k);
    for (std::size_t b = 0; b < n_; b += kRowBlock) {
        const std::size_t nb = std::min(kRowBlock, n_ - b);
        K.dot_rows(q, data_.data() + b * d_, nb, d_, scratch.data());
        top.push_block(scratch.data(), nb, static_cast<std::int64_t>(b));
    }
    top.write(idx, sim);
}

void SupportSet::search(const float* Q, std::size_t B, std::size_t k, std::int64_t* idx, float* sim,
                        int n_threads) const {
    check_k(k, n_);
    if (B == 0) return;
    check_rows(Q, B, d_, "queries");
    const Kernels& K = kernels();
    const int t = batch_threads(B, n_threads);
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
