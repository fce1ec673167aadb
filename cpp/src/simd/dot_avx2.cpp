// AVX2 + FMA float32 dot-product kernels.
//
// Precision: each (query, row) pair owns one 8-lane accumulator fed by FMA in steps of 8 floats; the
// d % 8 tail is a masked load (_mm256_maskload_ps) into the same accumulator; lanes are summed by a
// fixed tree (hi+lo 128, then movehdup/movehl). Every path performs exactly this sequence per pair,
// so equal rows give bit-equal similarities and batch/single searches agree bit for bit.
//
// Compact-copy kernels (bf16 / f16 / int8, approximate by design; see precision.hpp): values are
// widened exactly to float32 (bf16: shift left 16; f16: vcvtph2ps) and
// fed to two 8-lane FMA accumulators (even / odd 8-value steps) to hide FMA latency; the d % 16 tail
// is decoded through a small zero-padded buffer. int8 sums integers exactly (vpmaddwd).
//
// The standard headers come before the target pragma: compiled under it, their inline functions
// would be AVX2 code that the linker may pick for callers on any CPU.
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "knnroute/isa.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

namespace knnroute {

namespace {

alignas(32) const std::int32_t kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

inline __m256i tail_mask(std::size_t r) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable + 8 - r));
}

inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 sh = _mm_movehdup_ps(s);
    s = _mm_add_ps(s, sh);
    sh = _mm_movehl_ps(sh, s);
    s = _mm_add_ss(s, sh);
    return _mm_cvtss_f32(s);
}

inline float dot1(const float* q, const float* x, std::size_t d8, std::size_t d, __m256i m) {
    __m256 a = _mm256_setzero_ps();
    for (std::size_t j = 0; j < d8; j += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + j), _mm256_loadu_ps(x + j), a);
    if (d8 < d) a = _mm256_fmadd_ps(_mm256_maskload_ps(q + d8, m), _mm256_maskload_ps(x + d8, m), a);
    return hsum(a);
}

}  // namespace

void dot_rows_f32_avx2(const float* q, const float* base, std::size_t n, std::size_t d, float* out) {
    // One row at a time (sequential stream; see dot_avx512.cpp for the measurement behind it).
    const std::size_t d8 = d & ~std::size_t{7};
    const __m256i m = tail_mask(d - d8);
    for (std::size_t i = 0; i < n; ++i) out[i] = dot1(q, base + i * d, d8, d, m);
}

void dot_block_f32_avx2(const float* Q, std::size_t nq, const float* base, std::size_t n, std::size_t d,
                        float* out, std::size_t ldo) {
    const std::size_t d8 = d & ~std::size_t{7};
    const __m256i m = tail_mask(d - d8);
    std::size_t j0 = 0;
    // 4 queries x 2 rows: 8 accumulators + 2 row registers + 1 query register.
    for (; j0 + 4 <= nq; j0 += 4) {
        const float* q0 = Q + j0 * d;
        const float* q1 = q0 + d;
        const float* q2 = q1 + d;
        const float* q3 = q2 + d;
        float* o0 = out + j0 * ldo;
        float* o1 = o0 + ldo;
        float* o2 = o1 + ldo;
        float* o3 = o2 + ldo;
        std::size_t i = 0;
        for (; i + 2 <= n; i += 2) {
            const float* x0 = base + i * d;
            const float* x1 = x0 + d;
            __m256 a00 = _mm256_setzero_ps(), a01 = _mm256_setzero_ps(), a10 = _mm256_setzero_ps(),
                   a11 = _mm256_setzero_ps(), a20 = _mm256_setzero_ps(), a21 = _mm256_setzero_ps(),
                   a30 = _mm256_setzero_ps(), a31 = _mm256_setzero_ps();
            for (std::size_t j = 0; j < d8; j += 8) {
                const __m256 r0 = _mm256_loadu_ps(x0 + j), r1 = _mm256_loadu_ps(x1 + j);
                __m256 qv = _mm256_loadu_ps(q0 + j);
                a00 = _mm256_fmadd_ps(qv, r0, a00);
                a01 = _mm256_fmadd_ps(qv, r1, a01);
                qv = _mm256_loadu_ps(q1 + j);
                a10 = _mm256_fmadd_ps(qv, r0, a10);
                a11 = _mm256_fmadd_ps(qv, r1, a11);
                qv = _mm256_loadu_ps(q2 + j);
                a20 = _mm256_fmadd_ps(qv, r0, a20);
                a21 = _mm256_fmadd_ps(qv, r1, a21);
                qv = _mm256_loadu_ps(q3 + j);
                a30 = _mm256_fmadd_ps(qv, r0, a30);
                a31 = _mm256_fmadd_ps(qv, r1, a31);
            }
            if (d8 < d) {
                const __m256 r0 = _mm256_maskload_ps(x0 + d8, m), r1 = _mm256_maskload_ps(x1 + d8, m);
                __m256 qv = _mm256_maskload_ps(q0 + d8, m);
                a00 = _mm256_fmadd_ps(qv, r0, a00);
                a01 = _mm256_fmadd_ps(qv, r1, a01);
                qv = _mm256_maskload_ps(q1 + d8, m);
                a10 = _mm256_fmadd_ps(qv, r0, a10);
                a11 = _mm256_fmadd_ps(qv, r1, a11);
                qv = _mm256_maskload_ps(q2 + d8, m);
                a20 = _mm256_fmadd_ps(qv, r0, a20);
                a21 = _mm256_fmadd_ps(qv, r1, a21);
                qv = _mm256_maskload_ps(q3 + d8, m);
                a30 = _mm256_fmadd_ps(qv, r0, a30);
                a31 = _mm256_fmadd_ps(qv, r1, a31);
            }
            o0[i] = hsum(a00);
            o0[i + 1] = hsum(a01);
            o1[i] = hsum(a10);
            o1[i + 1] = hsum(a11);
            o2[i] = hsum(a20);
            o2[i + 1] = hsum(a21);
            o3[i] = hsum(a30);
            o3[i + 1] = hsum(a31);
        }
        for (; i < n; ++i) {
            const float* x = base + i * d;
            o0[i] = dot1(q0, x, d8, d, m);
            o1[i] = dot1(q1, x, d8, d, m);
            o2[i] = dot1(q2, x, d8, d, m);
            o3[i] = dot1(q3, x, d8, d, m);
        }
    }
    for (; j0 < nq; ++j0) dot_rows_f32_avx2(Q + j0 * d, base, n, d, out + j0 * ldo);
}


// --- compact copies ------------------------------------------------------------------------------

namespace {

inline __m256 widen_bf16(const std::uint16_t* p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}
inline __m256 widen_f16(const std::uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

template <class T, __m256 (*Widen)(const T*)>
inline float dot_compact(const float* q, const T* x, std::size_t d16, std::size_t d) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    std::size_t j = 0;
    for (; j < d16; j += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j), Widen(x + j), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j + 8), Widen(x + j + 8), a1);
    }
    if (j < d) {
        alignas(32) T xt[16] = {};
        alignas(32) float qt[16] = {};
        for (std::size_t t = 0; j + t < d; ++t) {
            xt[t] = x[j + t];
            qt[t] = q[j + t];
        }
        a0 = _mm256_fmadd_ps(_mm256_load_ps(qt), Widen(xt), a0);
        a1 = _mm256_fmadd_ps(_mm256_load_ps(qt + 8), Widen(xt + 8), a1);
    }
    return hsum(_mm256_add_ps(a0, a1));
}

}  // namespace

void dot_rows_bf16_avx2(const float* q, const std::uint16_t* base, std::size_t n, std::size_t d, float* out) {
    const std::size_t d16 = d & ~std::size_t{15};
    for (std::size_t i = 0; i < n; ++i) out[i] = dot_compact<std::uint16_t, widen_bf16>(q, base + i * d, d16, d);
}

void dot_rows_f16_avx2(const float* q, const std::uint16_t* base, std::size_t n, std::size_t d, float* out) {
    const std::size_t d16 = d & ~std::size_t{15};
    for (std::size_t i = 0; i < n; ++i) out[i] = dot_compact<std::uint16_t, widen_f16>(q, base + i * d, d16, d);
}

std::size_t select_ub_avx2(const float* a, const float* err, float eq, float T, std::size_t n, std::uint32_t* idx) {
    const float ts = select_margin_threshold(T);
    const __m256 t = _mm256_set1_ps(ts), vq = _mm256_set1_ps(eq), one = _mm256_set1_ps(1.f);
    std::size_t w = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 e = _mm256_loadu_ps(err + i);
        const __m256 ub = _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_add_ps(e, _mm256_mul_ps(vq, _mm256_add_ps(one, e))));
        unsigned k = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(ub, t, _CMP_GE_OQ)));
        while (k) {
            idx[w++] = static_cast<std::uint32_t>(i + static_cast<std::size_t>(__builtin_ctz(k)));
            k &= k - 1;
        }
    }
    for (; i < n; ++i)
        if (a[i] + (err[i] + eq * (1.f + err[i])) >= ts) idx[w++] = static_cast<std::uint32_t>(i);
    return w;
}

#include "i8_avx2.hpp"  // the int8 scan template (shared with dot_avx2_vnni.cpp)

void dot_rows_i8_avx2(const QuantQuery& q, const std::int8_t* base, const float* scale, const std::int32_t* rowsum,
                      std::size_t n, std::size_t d, float* out) {
    if (q.two_digits) i8_scan<true, false>(q, base, scale, rowsum, n, d, out);
    else i8_scan<false, false>(q, base, scale, rowsum, n, d, out);
}

}  // namespace knnroute

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // __x86_64__ (on other architectures this file compiles to nothing)
