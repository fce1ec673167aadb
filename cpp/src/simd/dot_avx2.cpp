// AVX2 + FMA float32 dot-product kernels.
//
// Precision: each (query, row) pair owns one 8-lane accumulator fed by FMA in steps of 8 floats; the
// d % 8 tail is a masked load (_mm256_maskload_ps) into the same accumulator; lanes are summed by a
// fixed tree (hi+lo 128, then movehdup/movehl). Every path performs exactly this sequence per pair,
// so equal rows give bit-equal similarities and batch/single searches agree bit for bit.
#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

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

}  // namespace knnroute

#pragma GCC pop_options
#else
#include <cstddef>
#include <stdexcept>
namespace knnroute {
void dot_rows_f32_avx2(const float*, const float*, std::size_t, std::size_t, float*) {
    throw std::logic_error("avx2 kernels not compiled for this architecture");
}
void dot_block_f32_avx2(const float*, std::size_t, const float*, std::size_t, std::size_t, float*, std::size_t) {
    throw std::logic_error("avx2 kernels not compiled for this architecture");
}
}  // namespace knnroute
#endif
