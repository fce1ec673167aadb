#include "knnroute/tune.hpp"

#include <algorithm>
#include <functional>
#include <cmath>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>

#include "knnroute/hull.hpp"
#include "knnroute/pool.hpp"
#include "knnroute/route.hpp"

namespace knnroute {

namespace {

// One (weighting, temperature) group: its distinct k (ascending) and, per k, the configurations using it.
struct Group {
    AggregateParams params;  // shrinkage unused
    std::vector<std::size_t> ks;
    std::vector<std::vector<std::size_t>> at_k;  // config indices per entry of ks
};

double weight(const AggregateParams& p, float s, float mx) {
    if (p.weighting == Weighting::uniform) return 1.0;
    if (p.weighting == Weighting::similarity) return s > 0.f ? static_cast<double>(s) : 0.0;
    return std::exp((static_cast<double>(s) - mx) / p.temperature);
}

}  // namespace

void tune_grid(const std::int64_t* idx, const float* sim, std::size_t B, std::size_t kmax, const float* scores,
               std::size_t N, std::size_t M, const std::vector<const float*>& cost_tables,
               const std::vector<const double*>& adds, const double* ts, const double* tc, double c_max,
               const std::vector<GridConfig>& configs, double* auc) {
    const std::size_t nc = cost_tables.size(), G = configs.size();
    if (nc == 0 || adds.size() != nc) throw std::invalid_argument("need one add (or null) per cost table");
    if (B == 0 || M == 0) throw std::invalid_argument("tune_grid needs at least one query and one model");
    for (std::size_t i = 0; i < B * kmax; ++i)
        if (idx[i] < 0 || static_cast<std::size_t>(idx[i]) >= N)
            throw std::invalid_argument("neighbour index " + std::to_string(idx[i]) + " out of range [0, " +
                                        std::to_string(N) + ")");
    std::vector<Group> groups;
    {
        std::map<std::pair<int, float>, std::size_t> where;
        for (std::size_t g = 0; g < G; ++g) {
            const GridConfig& cf = configs[g];
            if (cf.k < 1 || cf.k > kmax)
                throw std::invalid_argument("config k=" + std::to_string(cf.k) + " outside [1, " +
                                            std::to_string(kmax) + "]");
            if (cf.params.weighting == Weighting::softmax && !(cf.params.temperature > 0.f))
                throw std::invalid_argument("temperature must be > 0 for softmax weighting");
            if (!(cf.params.shrinkage >= 0.f)) throw std::invalid_argument("shrinkage must be >= 0");
            const float t = cf.params.weighting == Weighting::softmax ? cf.params.temperature : 0.f;
            auto key = std::make_pair(static_cast<int>(cf.params.weighting), t);
            auto it = where.find(key);
            if (it == where.end()) {
                it = where.emplace(key, groups.size()).first;
                groups.push_back(Group{cf.params, {}, {}});
            }
            Group& gr = groups[it->second];
            auto pos = std::lower_bound(gr.ks.begin(), gr.ks.end(), cf.k);
            const std::size_t at = static_cast<std::size_t>(pos - gr.ks.begin());
            if (pos == gr.ks.end() || *pos != cf.k) {
                gr.ks.insert(pos, cf.k);
                gr.at_k.insert(gr.at_k.begin() + static_cast<std::ptrdiff_t>(at), std::vector<std::size_t>{});
            }
            gr.at_k[at].push_back(g);
        }
    }
    std::vector<float> ps(M);
    std::vector<std::vector<float>> pc(nc, std::vector<float>(M));
    column_means(scores, N, M, ps.data());
    for (std::size_t c = 0; c < nc; ++c) column_means(cost_tables[c], N, M, pc[c].data());

    // Rows and configurations are independent: each is split over the core's worker pool (the calling
    // thread alone when the pool is busy or has one thread). Every output is computed by the same code on
    // exactly one thread, so the result does not depend on the split.
    const int T = std::max(1, pool_threads());
    auto split_run = [&](std::size_t n_items, const std::function<void(std::size_t, std::size_t)>& body) {
        const int tasks = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(T), n_items));
        if (tasks <= 1) {
            body(0, n_items);
            return;
        }
        auto task = [&](int t) {
            const std::size_t lo = n_items * static_cast<std::size_t>(t) / static_cast<std::size_t>(tasks);
            const std::size_t hi = n_items * static_cast<std::size_t>(t + 1) / static_cast<std::size_t>(tasks);
            body(lo, hi);
        };
        if (!pool_try_run(tasks, task)) body(0, n_items);
    };
    std::vector<float> s_out, c_out;
    for (const Group& gr : groups) {
        const std::size_t kg = gr.ks.back();
        // predictions of every config of the group: s (per config), c (per cost model and config)
        std::vector<std::size_t> slot(G, 0), order;
        std::size_t n_in = 0;
        for (const auto& v : gr.at_k)
            for (std::size_t g : v) {
                slot[g] = n_in++;
                order.push_back(g);
            }
        s_out.assign(n_in * B * M, 0.f);
        c_out.assign(nc * n_in * B * M, 0.f);
        const AggregateParams& p = gr.params;
        split_run(B, [&](std::size_t b_lo, std::size_t b_hi) {
            std::vector<double> w(kmax), ss(M), sw(M), cs(nc * M), cw(nc * M);
            for (std::size_t b = b_lo; b < b_hi; ++b) {
                const std::int64_t* ib = idx + b * kmax;
                const float* sb = sim + b * kmax;
                // softmax subtracts the largest of the first k similarities: one pass serves every k only
                // when that is sb[0] for each k (the search returns them nearest first).
                bool one_pass = true;
                if (p.weighting == Weighting::softmax)
                    for (std::size_t j = 1; j < kg; ++j)
                        if (sb[j] > sb[0]) {
                            one_pass = false;
                            break;
                        }
                const std::size_t passes = one_pass ? 1 : gr.ks.size();
                for (std::size_t pass = 0; pass < passes; ++pass) {
                    const std::size_t kend = one_pass ? kg : gr.ks[pass];
                    float mx = sb[0];
                    if (p.weighting == Weighting::softmax)
                        for (std::size_t j = 1; j < kend; ++j) mx = sb[j] > mx ? sb[j] : mx;
                    for (std::size_t j = 0; j < kend; ++j) w[j] = weight(p, sb[j], mx);
                    std::fill(ss.begin(), ss.end(), 0.0);
                    std::fill(sw.begin(), sw.end(), 0.0);
                    std::fill(cs.begin(), cs.end(), 0.0);
                    std::fill(cw.begin(), cw.end(), 0.0);
                    std::size_t next = one_pass ? 0 : pass;  // index into gr.ks of the next snapshot
                    for (std::size_t j = 0; j < kend; ++j) {
                        const std::size_t r = static_cast<std::size_t>(ib[j]);
                        const float* srow = scores + r * M;
                        const double wj = w[j];
                        double* __restrict ssp = ss.data();
                        double* __restrict swp = sw.data();
                        for (std::size_t m = 0; m < M; ++m) {
                            const double sv = srow[m];
                            const bool so_ = sv == sv;
                            ssp[m] += so_ ? wj * sv : 0.0;
                            swp[m] += so_ ? wj : 0.0;
                        }
                        for (std::size_t c = 0; c < nc; ++c) {
                            const float* crow = cost_tables[c] + r * M;
                            double* __restrict csp = cs.data() + c * M;
                            double* __restrict cwp = cw.data() + c * M;
                            for (std::size_t m = 0; m < M; ++m) {
                                const double cv = crow[m];
                                const bool co_ = cv == cv;
                                csp[m] += co_ ? wj * cv : 0.0;
                                cwp[m] += co_ ? wj : 0.0;
                            }
                        }
                        if (next < gr.ks.size() && j + 1 == gr.ks[next]) {
                            for (std::size_t g : gr.at_k[next]) {
                                const double beta = configs[g].params.shrinkage;
                                float* so = s_out.data() + (slot[g] * B + b) * M;
                                for (std::size_t m = 0; m < M; ++m) {
                                    const double ds = sw[m] + beta;
                                    so[m] = ds > 0.0 ? static_cast<float>((ss[m] + beta * ps[m]) / ds) : ps[m];
                                }
                                for (std::size_t c = 0; c < nc; ++c) {
                                    float* co = c_out.data() + ((c * n_in + slot[g]) * B + b) * M;
                                    const double* csm = cs.data() + c * M;
                                    const double* cwm = cw.data() + c * M;
                                    for (std::size_t m = 0; m < M; ++m) {
                                        const double dc = cwm[m] + beta;
                                        co[m] = dc > 0.0 ? static_cast<float>((csm[m] + beta * pc[c][m]) / dc)
                                                         : pc[c][m];
                                    }
                                }
                            }
                            ++next;
                            if (!one_pass) break;
                        }
                    }
                }
            }
        });
        // the exact sweep and hull AUC of every configuration of the group, per cost model
        std::vector<char> bad(n_in, 0);
        split_run(n_in, [&](std::size_t lo, std::size_t hi) {
            std::vector<float> c_use(B * M);
            std::vector<double> lams, mc, ms;
            for (std::size_t i_cfg = lo; i_cfg < hi; ++i_cfg) {
                const std::size_t g = order[i_cfg];
                const float* s = s_out.data() + slot[g] * B * M;
                bool finite = true;
                for (std::size_t i = 0; i < B * M && finite; ++i) finite = std::isfinite(s[i]);
                for (std::size_t c = 0; c < nc && finite; ++c) {
                    const float* ch = c_out.data() + (c * n_in + slot[g]) * B * M;
                    const float* cuse = ch;
                    if (adds[c] != nullptr) {
                        for (std::size_t i = 0; i < B * M; ++i)
                            c_use[i] = static_cast<float>(static_cast<double>(ch[i]) + adds[c][i]);
                        cuse = c_use.data();
                    }
                    for (std::size_t i = 0; i < B * M && finite; ++i) finite = std::isfinite(cuse[i]);
                    if (!finite) break;
                    sweep(s, cuse, ts, tc, B, M, lams, mc, ms);
                    for (double& x : ms) x *= 100.0;
                    auc[c * G + g] = hull_auc(mc.data(), ms.data(), mc.size(), c_max);
                }
                if (!finite) bad[i_cfg] = 1;
            }
        });
        for (char x : bad)
            if (x) throw std::invalid_argument("predictions must be finite (a cost or score overflowed)");
    }
}

}  // namespace knnroute
