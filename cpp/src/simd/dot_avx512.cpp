// AVX-512 (F/BW/VL/DQ) float32 dot-product kernels.
//
// Precision: each (query, row) pair owns one 16-lane accumulator fed by FMA in steps of 16 floats;
// the d % 16 tail is a masked load into the same accumulator; the 16 lanes are then summed by
// _mm512_reduce_add_ps. Every code path (4-row groups, single rows, the 4x2 batch micro-kernel)
// performs exactly this sequence per pair, so equal rows give bit-equal similarities (ties are exact)
// and batch and single-query searches agree bit for bit. Differs from scalar (sequential sum, no
// FMA) in the last bits only.
//
// Compact-copy kernels (bf16 / f16 / int8, approximate by design; see precision.hpp): values are
// widened exactly to float32 (bf16: shift left 16; f16: vcvtph2ps; int8: sign-extend + convert) and
// fed to two 16-lane FMA accumulators (even / odd 16-value steps) to hide FMA latency; the tail is a
// masked load.
#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")
// GCC 12 reports a false -Wmaybe-uninitialized inside avx512fintrin.h (_mm512_undefined_ps).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace knnroute {

namespace {

inline __mmask16 tail_mask(std::size_t r) { return static_cast<__mmask16>((1u << r) - 1u); }

inline float dot1(const float* q, const float* x, std::size_t d16, std::size_t d, __mmask16 m) {
    __m512 a = _mm512_setzero_ps();
    for (std::size_t j = 0; j < d16; j += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(q + j), _mm512_loadu_ps(x + j), a);
    if (d16 < d) a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + d16), _mm512_maskz_loadu_ps(m, x + d16), a);
    return _mm512_reduce_add_ps(a);
}

}  // namespace

void dot_rows_f32_avx512(const float* q, const float* base, std::size_t n, std::size_t d, float* out) {
    // One row at a time: measured on this project's AMD EPYC VM, reading 2 or 4 rows interleaved
    // ran at a quarter to a half of the sequential read bandwidth, so the single-query (memory-bound)
    // path streams rows strictly in order.
    const std::size_t d16 = d & ~std::size_t{15};
    const __mmask16 m = tail_mask(d - d16);
    for (std::size_t i = 0; i < n; ++i) out[i] = dot1(q, base + i * d, d16, d, m);
}

void dot_block_f32_avx512(const float* Q, std::size_t nq, const float* base, std::size_t n, std::size_t d,
                          float* out, std::size_t ldo) {
    const std::size_t d16 = d & ~std::size_t{15};
    const __mmask16 m = tail_mask(d - d16);
    std::size_t j0 = 0;
    // 4 queries x 2 rows: 8 accumulators; each row load is shared by 4 queries.
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
            __m512 a00 = _mm512_setzero_ps(), a01 = _mm512_setzero_ps(), a10 = _mm512_setzero_ps(),
                   a11 = _mm512_setzero_ps(), a20 = _mm512_setzero_ps(), a21 = _mm512_setzero_ps(),
                   a30 = _mm512_setzero_ps(), a31 = _mm512_setzero_ps();
            for (std::size_t j = 0; j < d16; j += 16) {
                const __m512 r0 = _mm512_loadu_ps(x0 + j), r1 = _mm512_loadu_ps(x1 + j);
                __m512 qv = _mm512_loadu_ps(q0 + j);
                a00 = _mm512_fmadd_ps(qv, r0, a00);
                a01 = _mm512_fmadd_ps(qv, r1, a01);
                qv = _mm512_loadu_ps(q1 + j);
                a10 = _mm512_fmadd_ps(qv, r0, a10);
                a11 = _mm512_fmadd_ps(qv, r1, a11);
                qv = _mm512_loadu_ps(q2 + j);
                a20 = _mm512_fmadd_ps(qv, r0, a20);
                a21 = _mm512_fmadd_ps(qv, r1, a21);
                qv = _mm512_loadu_ps(q3 + j);
                a30 = _mm512_fmadd_ps(qv, r0, a30);
                a31 = _mm512_fmadd_ps(qv, r1, a31);
            }
            if (d16 < d) {
                const __m512 r0 = _mm512_maskz_loadu_ps(m, x0 + d16), r1 = _mm512_maskz_loadu_ps(m, x1 + d16);
                __m512 qv = _mm512_maskz_loadu_ps(m, q0 + d16);
                a00 = _mm512_fmadd_ps(qv, r0, a00);
                a01 = _mm512_fmadd_ps(qv, r1, a01);
                qv = _mm512_maskz_loadu_ps(m, q1 + d16);
                a10 = _mm512_fmadd_ps(qv, r0, a10);
                a11 = _mm512_fmadd_ps(qv, r1, a11);
                qv = _mm512_maskz_loadu_ps(m, q2 + d16);
                a20 = _mm512_fmadd_ps(qv, r0, a20);
                a21 = _mm512_fmadd_ps(qv, r1, a21);
                qv = _mm512_maskz_loadu_ps(m, q3 + d16);
                a30 = _mm512_fmadd_ps(qv, r0, a30);
                a31 = _mm512_fmadd_ps(qv, r1, a31);
            }
            o0[i] = _mm512_reduce_add_ps(a00);
            o0[i + 1] = _mm512_reduce_add_ps(a01);
            o1[i] = _mm512_reduce_add_ps(a10);
            o1[i + 1] = _mm512_reduce_add_ps(a11);
            o2[i] = _mm512_reduce_add_ps(a20);
            o2[i + 1] = _mm512_reduce_add_ps(a21);
            o3[i] = _mm512_reduce_add_ps(a30);
            o3[i + 1] = _mm512_reduce_add_ps(a31);
        }
        for (; i < n; ++i) {
            const float* x = base + i * d;
            o0[i] = dot1(q0, x, d16, d, m);
            o1[i] = dot1(q1, x, d16, d, m);
            o2[i] = dot1(q2, x, d16, d, m);
            o3[i] = dot1(q3, x, d16, d, m);
        }
    }
    for (; j0 < nq; ++j0) dot_rows_f32_avx512(Q + j0 * d, base, n, d, out + j0 * ldo);
}


// --- compact copies ------------------------------------------------------------------------------

namespace {

inline __m512 widen_bf16(__m256i v) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16)); }
inline __m512 widen_f16(__m256i v) { return _mm512_cvtph_ps(v); }
inline __m512 widen_i8(__m128i v) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v)); }

inline __m256i ld16(const std::uint16_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline __m128i ld8(const std::int8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }

template <bool Bf16>
inline float dot_u16(const float* q, const std::uint16_t* x, std::size_t d, __mmask16 m) {
    auto widen = [](__m256i v) { return Bf16 ? widen_bf16(v) : widen_f16(v); };
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    std::size_t j = 0;
    for (; j + 32 <= d; j += 32) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + j), widen(ld16(x + j)), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + j + 16), widen(ld16(x + j + 16)), a1);
    }
    if (j + 16 <= d) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + j), widen(ld16(x + j)), a0);
        j += 16;
    }
    if (j < d)
        a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + j), widen(_mm256_maskz_loadu_epi16(m, x + j)), a1);
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

inline float dot_i8(const float* q, const std::int8_t* x, std::size_t d, __mmask16 m) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    std::size_t j = 0;
    for (; j + 32 <= d; j += 32) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + j), widen_i8(ld8(x + j)), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + j + 16), widen_i8(ld8(x + j + 16)), a1);
    }
    if (j + 16 <= d) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + j), widen_i8(ld8(x + j)), a0);
        j += 16;
    }
    if (j < d) a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + j), widen_i8(_mm_maskz_loadu_epi8(m, x + j)), a1);
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

}  // namespace

void dot_rows_bf16_avx512(const float* q, const std::uint16_t* base, std::size_t n, std::size_t d, float* out) {
    const __mmask16 m = tail_mask(d & 15);
    for (std::size_t i = 0; i < n; ++i) out[i] = dot_u16<true>(q, base + i * d, d, m);
}

void dot_rows_f16_avx512(const float* q, const std::uint16_t* base, std::size_t n, std::size_t d, float* out) {
    const __mmask16 m = tail_mask(d & 15);
    for (std::size_t i = 0; i < n; ++i) out[i] = dot_u16<false>(q, base + i * d, d, m);
}

void dot_rows_i8_avx512(const float* q, const std::int8_t* base, const float* scale, std::size_t n, std::size_t d,
                        float* out) {
    const __mmask16 m = tail_mask(d & 15);
    for (std::size_t i = 0; i < n; ++i) out[i] = scale[i] * dot_i8(q, base + i * d, d, m);
}

}  // namespace knnroute

#pragma GCC pop_options
#else
#include <cstddef>
#include <cstdint>
#include <stdexcept>
namespace knnroute {
void dot_rows_f32_avx512(const float*, const float*, std::size_t, std::size_t, float*) {
    throw std::logic_error("avx512 kernels not compiled for this architecture");
}
void dot_block_f32_avx512(const float*, std::size_t, const float*, std::size_t, std::size_t, float*, std::size_t) {
    throw std::logic_error("avx512 kernels not compiled for this architecture");
}
void dot_rows_bf16_avx512(const float*, const std::uint16_t*, std::size_t, std::size_t, float*) {
    throw std::logic_error("avx512 kernels not compiled for this architecture");
}
void dot_rows_f16_avx512(const float*, const std::uint16_t*, std::size_t, std::size_t, float*) {
    throw std::logic_error("avx512 kernels not compiled for this architecture");
}
void dot_rows_i8_avx512(const float*, const std::int8_t*, const float*, std::size_t, std::size_t, float*) {
    throw std::logic_error("avx512 kernels not compiled for this architecture");
}
}  // namespace knnroute
#endif
