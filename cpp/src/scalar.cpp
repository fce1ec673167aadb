// The scalar reference kernels: every entry of the "scalar" kernel set (isa.cpp), portable C++.
//
// Precision: float32 products summed in index order into a float32 accumulator (no FMA contraction
// is requested; the compiler may still vectorise). bf16 / f16 values are decoded exactly to float32
// first; int8 sums integers exactly (see isa.hpp, QuantQuery). The SIMD files sum in another order
// (lane-wise partial sums, then a tree reduction), so float results differ in the last bits; the
// compact-copy search only uses approximate values through the rigorous bound in precision.hpp, so
// the order never changes a search result.
#include <cstddef>
#include <cstdint>

#include "knnroute/isa.hpp"
#include "knnroute/precision.hpp"

namespace knnroute {

void dot_rows_f32_scalar(const float* q, const float* base, std::size_t n, std::size_t d, float* out) {
    for (std::size_t i = 0; i < n; ++i) {
        const float* x = base + i * d;
        float acc = 0.f;
        for (std::size_t j = 0; j < d; ++j) acc += q[j] * x[j];
        out[i] = acc;
    }
}

void dot_block_f32_scalar(const float* Q, std::size_t nq, const float* base, std::size_t n, std::size_t d,
                          float* out, std::size_t ldo) {
    for (std::size_t j = 0; j < nq; ++j) dot_rows_f32_scalar(Q + j * d, base, n, d, out + j * ldo);
}

void dot_rows_bf16_scalar(const float* q, const std::uint16_t* base, std::size_t n, std::size_t d, float* out) {
    for (std::size_t i = 0; i < n; ++i) {
        const std::uint16_t* x = base + i * d;
        float acc = 0.f;
        for (std::size_t j = 0; j < d; ++j) acc += q[j] * bf16_to_f32(x[j]);
        out[i] = acc;
    }
}

void dot_rows_f16_scalar(const float* q, const std::uint16_t* base, std::size_t n, std::size_t d, float* out) {
    for (std::size_t i = 0; i < n; ++i) {
        const std::uint16_t* x = base + i * d;
        float acc = 0.f;
        for (std::size_t j = 0; j < d; ++j) acc += q[j] * f16_to_f32(x[j]);
        out[i] = acc;
    }
}

void dot_rows_i8_scalar(const QuantQuery& q, const std::int8_t* base, const float* scale, const std::int32_t*,
                        std::size_t n, std::size_t d, float* out) {
    for (std::size_t i = 0; i < n; ++i) {
        const std::int8_t* x = base + i * d;
        std::int32_t h = 0, l = 0;
        for (std::size_t j = 0; j < d; ++j) {
            h += static_cast<std::int32_t>(q.hi[j]) * x[j];
            l += static_cast<std::int32_t>(q.lo[j]) * x[j];
        }
        out[i] = scale[i] * q.sq * (static_cast<float>(h) + static_cast<float>(l) * (1.f / 254.f));
    }
}

std::size_t select_ub_scalar(const float* a, const float* err, float eq, float T, std::size_t n,
                             std::uint32_t* idx) {
    const float t = select_margin_threshold(T);
    std::size_t w = 0;
    for (std::size_t i = 0; i < n; ++i)
        if (a[i] + (err[i] + eq * (1.f + err[i])) >= t) idx[w++] = static_cast<std::uint32_t>(i);
    return w;
}

}  // namespace knnroute
