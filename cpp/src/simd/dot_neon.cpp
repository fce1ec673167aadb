// AArch64 Advanced SIMD ("neon") kernels: float32, bf16, f16 and int8 (without dotprod) dot products
// and the candidate prefilter. Advanced SIMD, FMA and half-precision conversion are baseline AArch64,
// so this file needs no target flags (GCC, clang and Apple clang alike).
//
// Precision: each (query, row) pair owns four 4-lane FMA accumulators fed in steps of 16 floats
// (a0 += q[j..j+3] x[j..j+3], a1 the next 4, ...), leftover groups of 4 go to a0, then the lanes are
// summed by a fixed tree, ((a0 + a1) + (a2 + a3)) then faddv, and the last d % 4 products are added in
// index order. Every path performs exactly this sequence per pair, so equal rows give bit-equal
// similarities and batch/single searches agree bit for bit (dot_block is the row kernel per query).
//
// Compact copies: bf16 widens by shll #16, f16 by fcvtl / fcvtl2 (exact), both into the same
// four-accumulator scheme; int8 sums integers exactly (i8_neon.hpp; sdot in dot_neon_dotprod.cpp).
#include <cstddef>
#include <cstdint>

#include "knnroute/isa.hpp"
#include "knnroute/precision.hpp"

#if defined(__aarch64__)
#include <arm_neon.h>

namespace knnroute {

#include "i8_neon.hpp"

namespace {

inline float finish(float32x4_t a0, float32x4_t a1, float32x4_t a2, float32x4_t a3) {
    return vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
}

inline float dot1(const float* q, const float* x, std::size_t d) {
    float32x4_t a0 = vdupq_n_f32(0.f), a1 = a0, a2 = a0, a3 = a0;
    std::size_t j = 0;
    for (; j + 16 <= d; j += 16) {
        a0 = vfmaq_f32(a0, vld1q_f32(q + j), vld1q_f32(x + j));
        a1 = vfmaq_f32(a1, vld1q_f32(q + j + 4), vld1q_f32(x + j + 4));
        a2 = vfmaq_f32(a2, vld1q_f32(q + j + 8), vld1q_f32(x + j + 8));
        a3 = vfmaq_f32(a3, vld1q_f32(q + j + 12), vld1q_f32(x + j + 12));
    }
    for (; j + 4 <= d; j += 4) a0 = vfmaq_f32(a0, vld1q_f32(q + j), vld1q_f32(x + j));
    float s = finish(a0, a1, a2, a3);
    for (; j < d; ++j) s += q[j] * x[j];
    return s;
}

inline float32x4_t widen_lo(uint16x8_t v, bool bf16) {
    return bf16 ? vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(v), 16))
                : vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(v)));
}
inline float32x4_t widen_hi(uint16x8_t v, bool bf16) {
    return bf16 ? vreinterpretq_f32_u32(vshll_high_n_u16(v, 16)) : vcvt_high_f32_f16(vreinterpretq_f16_u16(v));
}

template <bool Bf16>
inline float dot_u16(const float* q, const std::uint16_t* x, std::size_t d) {
    float32x4_t a0 = vdupq_n_f32(0.f), a1 = a0, a2 = a0, a3 = a0;
    std::size_t j = 0;
    for (; j + 16 <= d; j += 16) {
        const uint16x8_t v0 = vld1q_u16(x + j), v1 = vld1q_u16(x + j + 8);
        a0 = vfmaq_f32(a0, vld1q_f32(q + j), widen_lo(v0, Bf16));
        a1 = vfmaq_f32(a1, vld1q_f32(q + j + 4), widen_hi(v0, Bf16));
        a2 = vfmaq_f32(a2, vld1q_f32(q + j + 8), widen_lo(v1, Bf16));
        a3 = vfmaq_f32(a3, vld1q_f32(q + j + 12), widen_hi(v1, Bf16));
    }
    for (; j + 8 <= d; j += 8) {
        const uint16x8_t v0 = vld1q_u16(x + j);
        a0 = vfmaq_f32(a0, vld1q_f32(q + j), widen_lo(v0, Bf16));
        a1 = vfmaq_f32(a1, vld1q_f32(q + j + 4), widen_hi(v0, Bf16));
    }
    float s = finish(a0, a1, a2, a3);
    for (; j < d; ++j) s += q[j] * (Bf16 ? bf16_to_f32(x[j]) : f16_to_f32(x[j]));
    return s;
}

}  // namespace

void dot_rows_f32_neon(const float* q, const float* base, std::size_t n, std::size_t d, float* out) {
    for (std::size_t i = 0; i < n; ++i) out[i] = dot1(q, base + i * d, d);
}

void dot_block_f32_neon(const float* Q, std::size_t nq, const float* base, std::size_t n, std::size_t d, float* out,
                        std::size_t ldo) {
    for (std::size_t j = 0; j < nq; ++j) dot_rows_f32_neon(Q + j * d, base, n, d, out + j * ldo);
}

void dot_rows_bf16_neon(const float* q, const std::uint16_t* base, std::size_t n, std::size_t d, float* out) {
    for (std::size_t i = 0; i < n; ++i) out[i] = dot_u16<true>(q, base + i * d, d);
}

void dot_rows_f16_neon(const float* q, const std::uint16_t* base, std::size_t n, std::size_t d, float* out) {
    for (std::size_t i = 0; i < n; ++i) out[i] = dot_u16<false>(q, base + i * d, d);
}

void dot_rows_i8_neon(const QuantQuery& q, const std::int8_t* base, const float* scale, const std::int32_t*,
                      std::size_t n, std::size_t d, float* out) {
    if (q.two_digits) i8_scan_neon<true, false>(q, base, scale, n, d, out);
    else i8_scan_neon<false, false>(q, base, scale, n, d, out);
}

std::size_t select_ub_neon(const float* a, const float* err, float eq, float T, std::size_t n, std::uint32_t* idx) {
    const float ts = select_margin_threshold(T);
    const float32x4_t t = vdupq_n_f32(ts), vq = vdupq_n_f32(eq), one = vdupq_n_f32(1.f);
    std::size_t w = 0, i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t e = vld1q_f32(err + i);
        const float32x4_t ub = vaddq_f32(vld1q_f32(a + i), vaddq_f32(e, vmulq_f32(vq, vaddq_f32(one, e))));
        const uint32x4_t ge = vcgeq_f32(ub, t);
        if (vmaxvq_u32(ge) == 0) continue;  // most groups: no row passes
        std::uint32_t m[4];
        vst1q_u32(m, ge);
        for (std::size_t k = 0; k < 4; ++k)
            if (m[k]) idx[w++] = static_cast<std::uint32_t>(i + k);
    }
    for (; i < n; ++i)
        if (a[i] + (err[i] + eq * (1.f + err[i])) >= ts) idx[w++] = static_cast<std::uint32_t>(i);
    return w;
}

}  // namespace knnroute
#endif  // __aarch64__ (on other architectures this file compiles to nothing)
