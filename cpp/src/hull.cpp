#include "knnroute/hull.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

namespace knnroute {

namespace {
struct Pt {
    double x, y;
};
// > 0 when o -> a -> b turns left (counter-clockwise).
inline double cross(const Pt& o, const Pt& a, const Pt& b) { return (a.x - o.x) * (b.y - o.y) - (a.y - o.y) * (b.x - o.x); }
}  // namespace

void nondecreasing_hull(const double* cost, const double* score, std::size_t P, std::vector<double>& hull_cost,
                        std::vector<double>& hull_score) {
    std::vector<Pt> pts;
    pts.reserve(P + 1);
    pts.push_back(Pt{0.0, 0.0});  // the null router
    for (std::size_t i = 0; i < P; ++i) {
        if (!std::isfinite(cost[i]) || !std::isfinite(score[i]))
            throw std::invalid_argument("curve point " + std::to_string(i) + " is not finite");
        if (cost[i] < 0.0) throw std::invalid_argument("curve point " + std::to_string(i) + " has a negative cost");
        pts.push_back(Pt{cost[i], score[i]});
    }
    // By cost ascending; for equal cost keep only the highest score.
    std::sort(pts.begin(), pts.end(), [](const Pt& a, const Pt& b) { return a.x < b.x || (a.x == b.x && a.y > b.y); });
    std::vector<Pt> uniq;
    uniq.reserve(pts.size());
    for (const Pt& p : pts)
        if (uniq.empty() || p.x != uniq.back().x) uniq.push_back(p);
    // Upper hull (monotone chain): drop the middle point unless the chain turns right (clockwise).
    std::vector<Pt> h;
    h.reserve(uniq.size());
    for (const Pt& p : uniq) {
        while (h.size() >= 2 && cross(h[h.size() - 2], h.back(), p) >= 0.0) h.pop_back();
        h.push_back(p);
    }
    // Cut after the first vertex with the highest score: the rest is flat (non-decreasing hull).
    std::size_t top = 0;
    for (std::size_t i = 1; i < h.size(); ++i)
        if (h[i].y > h[top].y) top = i;
    h.resize(top + 1);
    hull_cost.resize(h.size());
    hull_score.resize(h.size());
    for (std::size_t i = 0; i < h.size(); ++i) {
        hull_cost[i] = h[i].x;
        hull_score[i] = h[i].y;
    }
}

double hull_auc(const double* cost, const double* score, std::size_t P, double c_max) {
    if (!(c_max > 0.0) || !std::isfinite(c_max)) throw std::invalid_argument("c_max must be finite and > 0");
    std::vector<double> hx, hy;
    nondecreasing_hull(cost, score, P, hx, hy);
    double area = 0.0;
    for (std::size_t i = 0; i + 1 < hx.size(); ++i) {
        const double x0 = hx[i] / c_max, x1 = hx[i + 1] / c_max;
        if (x0 >= 1.0) break;
        const double y0 = hy[i], y1 = hy[i + 1];
        if (x1 <= 1.0) {
            area += 0.5 * (y0 + y1) * (x1 - x0);
        } else {
            const double y1c = y0 + (y1 - y0) * (1.0 - x0) / (x1 - x0);
            area += 0.5 * (y0 + y1c) * (1.0 - x0);
        }
    }
    const double xl = hx.back() / c_max;
    if (xl < 1.0) area += hy.back() * (1.0 - xl);
    return area;
}

}  // namespace knnroute
