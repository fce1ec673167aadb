// Non-decreasing convex hull and its area (DESIGN.md, Evaluation conventions).
#pragma once

#include <cstddef>
#include <vector>

namespace knnroute {

// Upper convex hull (monotone chain, O(P log P)) of the points (cost, score) plus the null router
// (0, 0), cut after its highest score (first vertex reaching it). Vertices by increasing cost.
// Costs must be finite and >= 0, scores finite (throws std::invalid_argument otherwise).
void nondecreasing_hull(const double* cost, const double* score, std::size_t P,
                        std::vector<double>& hull_cost, std::vector<double>& hull_score);

// Area under that hull over normalised cost x = cost / c_max in [0, 1]: piecewise linear between
// vertices, flat after the last vertex, clipped at x = 1. Same units as score (e.g. 0-100).
double hull_auc(const double* cost, const double* score, std::size_t P, double c_max);

}  // namespace knnroute
