// Per-model neighbourhoods: for each model, the k nearest rows that observed it, from one scan.
//
// A feedback row observes one model (NaN for the others). With a plain top-k such rows crowd the k
// nearest and every other model's prediction rests on the few full rows left among them. Here each
// model gets its own bounded selection over the rows that observed it, from one similarity pass:
// rows observing every model (full rows, the fitted file's) go to one shared heap, each partial row
// to the heaps of the models it observed; per model the shared heap's and its own heap's candidates
// are merged. Top-k of a union is the top-k of the union of the parts' top-k, so the result is the
// exact top-k among the rows observing the model, with the search's order (higher similarity, then
// lower index). Similarities come from the f32 row kernel (bit-identical to the f32 search's).
#include <algorithm>
#include <vector>

#include "knnroute/isa.hpp"
#include "knnroute/search.hpp"
#include "search_detail.hpp"
#include "topk.hpp"

namespace knnroute {

using detail::better;
using detail::Cand;
using detail::kRowBlock;
using detail::TopK;

void SupportSet::search_one_per_model(const float* q, std::size_t k, const float* scores, std::size_t M,
                                      const std::uint8_t* full, std::int64_t* idx, float* sim, std::size_t* count,
                                      float* all_sims) const {
    detail::check_k(k, n_);
    const Kernels& K = kernels();
    static thread_local std::vector<Cand> heaps;  // [shared | model 0 | ... | model M-1], k each
    static thread_local std::vector<TopK> tops;
    static thread_local std::vector<float> block;
    static thread_local std::vector<Cand> a, b;
    if (heaps.size() < (M + 1) * k) heaps.resize((M + 1) * k);
    if (tops.size() < M + 1) tops.resize(M + 1);
    if (block.size() < kRowBlock) block.resize(kRowBlock);
    for (std::size_t t = 0; t <= M; ++t) tops[t].reset(heaps.data() + t * k, k);
    TopK& shared = tops[0];
    for (std::size_t b0 = 0; b0 < n_; b0 += kRowBlock) {
        const std::size_t nb = std::min(kRowBlock, n_ - b0);
        float* bs = all_sims ? all_sims + b0 : block.data();
        K.dot_rows(q, data_.data() + b0 * d_, nb, d_, bs);
        // Runs of full rows go to the shared heap as a block (the common case: the fitted rows).
        std::size_t i = 0;
        while (i < nb) {
            std::size_t j = i;
            while (j < nb && full[b0 + j]) ++j;
            if (j > i) shared.push_block(bs + i, j - i, static_cast<std::int64_t>(b0 + i));
            for (; j < nb && !full[b0 + j]; ++j) {
                const std::size_t r = b0 + j;
                const float* srow = scores + r * M;
                for (std::size_t m = 0; m < M; ++m)
                    if (srow[m] == srow[m]) tops[m + 1].push_any(bs[j], static_cast<std::int64_t>(r));
            }
            i = j;
        }
    }
    a.clear();
    shared.sorted_into(a);
    for (std::size_t m = 0; m < M; ++m) {
        b.clear();
        tops[m + 1].sorted_into(b);
        std::int64_t* io = idx + m * k;
        float* so = sim + m * k;
        std::size_t ia = 0, ib = 0, c = 0;
        for (; c < k && (ia < a.size() || ib < b.size()); ++c) {
            const bool take_a = ib >= b.size() || (ia < a.size() && better(a[ia], b[ib]));
            const Cand& x = take_a ? a[ia++] : b[ib++];
            io[c] = x.idx;
            so[c] = x.sim;
        }
        count[m] = c;
        for (std::size_t j = c; j < k; ++j) {
            io[j] = -1;
            so[j] = 0.f;
        }
    }
}

}  // namespace knnroute
