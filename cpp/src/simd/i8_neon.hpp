// The AArch64 int8 scan (one template, two instruction choices): included by dot_neon.cpp (Dot = false:
// smull / smlal2 / sadalp) and by dot_neon_dotprod.cpp (Dot = true: sdot, compiled with +dotprod).
// Internal to those two files; needs <arm_neon.h> and knnroute/isa.hpp first and is included inside
// namespace knnroute.
//
// R rows side by side give 2R independent accumulation chains. Without dotprod, 16 products of a step
// are formed in int16 (|q x| <= 127 * 127, and smlal2 adds a second product to each lane: <= 32,258,
// no overflow), then sadalp adds lane pairs into int32. With dotprod, sdot adds 4 s8 x s8 products into
// each int32 lane (signed x signed: no u8 offset and no row-sum correction). The d % 16 tail is summed
// in scalar; integer sums are exact in any order, so both equal the scalar reference's integers.
#pragma once

namespace {

template <int R, bool Two, bool Dot>
inline void i8_rows_neon(const QuantQuery& q, const std::int8_t* base, const float* scale, std::size_t d,
                         float* out) {
    const std::size_t d16 = d & ~std::size_t{15};
    int32x4_t h[R], l[R];
    for (int r = 0; r < R; ++r) h[r] = l[r] = vdupq_n_s32(0);
    for (std::size_t j = 0; j < d16; j += 16) {
        const int8x16_t vh = vld1q_s8(q.hi + j);
        const int8x16_t vl = Two ? vld1q_s8(q.lo + j) : vdupq_n_s8(0);
        for (int r = 0; r < R; ++r) {
            const int8x16_t v = vld1q_s8(base + static_cast<std::size_t>(r) * d + j);
            if constexpr (Dot) {
#if defined(__ARM_FEATURE_DOTPROD)
                h[r] = vdotq_s32(h[r], vh, v);
                if constexpr (Two) l[r] = vdotq_s32(l[r], vl, v);
#else
                static_assert(!Dot, "the sdot scan needs a file compiled with +dotprod");
#endif
            } else {
                h[r] = vpadalq_s16(h[r], vmlal_high_s8(vmull_s8(vget_low_s8(vh), vget_low_s8(v)), vh, v));
                if constexpr (Two)
                    l[r] = vpadalq_s16(l[r], vmlal_high_s8(vmull_s8(vget_low_s8(vl), vget_low_s8(v)), vl, v));
            }
        }
    }
    for (int r = 0; r < R; ++r) {
        const std::int8_t* x = base + static_cast<std::size_t>(r) * d;
        std::int32_t H = vaddvq_s32(h[r]), L = Two ? vaddvq_s32(l[r]) : 0;
        for (std::size_t j = d16; j < d; ++j) {
            H += static_cast<std::int32_t>(q.hi[j]) * x[j];
            if constexpr (Two) L += static_cast<std::int32_t>(q.lo[j]) * x[j];
        }
        out[r] = scale[r] * q.sq * (static_cast<float>(H) + static_cast<float>(L) * (1.f / 254.f));
    }
}

template <bool Two, bool Dot>
inline void i8_scan_neon(const QuantQuery& q, const std::int8_t* base, const float* scale, std::size_t n,
                         std::size_t d, float* out) {
    std::size_t i = 0;
    for (; i + 4 <= n; i += 4) i8_rows_neon<4, Two, Dot>(q, base + i * d, scale + i, d, out + i);
    for (; i < n; ++i) i8_rows_neon<1, Two, Dot>(q, base + i * d, scale + i, d, out + i);
}

}  // namespace
