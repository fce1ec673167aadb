// The bounded top-k heap of the searches, with the deterministic tie rule (higher similarity, then
// lower index). Internal to the search files.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "knnroute/search.hpp"

namespace knnroute::detail {

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

}  // namespace knnroute::detail
