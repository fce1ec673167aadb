// AVX-512 (F/BW/VL/DQ) float32 dot-product kernels.
//
// Precision: each (query, row) pair owns one 16-lane accumulator fed by FMA in steps of 16 floats;
// the d % 16 tail is a masked load into the same accumulator; the 16 lanes are then summed by one
// fixed tree, hsum16: (lane i + lane i+8), then (+4), then (+2), then (+1). The batch micro-kernel
// (4 queries x 4 rows) sums its 16 accumulators with a transposed version of the same tree (16 sums
// in 15 vector adds instead of 16 horizontal reductions), pairing the same lanes in the same order.
// Every code path performs exactly this sequence per pair, so equal rows give bit-equal similarities
// (ties are exact) and batch and single-query searches agree bit for bit. Differs from scalar (sequential sum, no
// FMA) in the last bits only.
//
// Compact-copy kernels (bf16 / f16 / int8, approximate by design; see precision.hpp): values are
// widened exactly to float32 (bf16: shift left 16; f16: vcvtph2ps) and
// fed to two 16-lane FMA accumulators (even / odd 16-value steps) to hide FMA latency; the tail is a
// masked load. int8 sums integers exactly: VNNI vpdpbusd (u8 query digits x s8 rows, minus 128 x the
// row sum) in the "avx512-vnni" set. The "avx512" set takes the AVX2 int8 kernel (i8_avx2.hpp:
// vpmaddubsw needs vpsignb, which has no 512-bit form; the 256-bit kernel runs at the scan's memory
// bound on the AVX-512 Xeon VM, 129 us for 10k x 384 against 196 us for the former zmm vpmaddwd kernel).
//
// Two kernel sets use this file (isa.cpp): "avx512" (int8 by the AVX2 kernel, no VNNI instruction) and
// "avx512-vnni" (the int8 row and batch kernels use vpdpbusd; every other kernel is shared).
//
// The standard headers come before the target pragma: compiled under it, their inline functions
// would be AVX-512 code that the linker may pick for callers on any CPU.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "knnroute/isa.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c"))), apply_to = function)
// A lambda does not inherit its function's target attribute under clang: the VNNI kernels' lambdas
// name it themselves.
#define KNNROUTE_VNNI_LAMBDA __attribute__((target("avx512f,avx512bw,avx512vnni")))
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")
// GCC 12 reports a false -Wmaybe-uninitialized inside avx512fintrin.h (_mm512_undefined_ps).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define KNNROUTE_VNNI_LAMBDA
#endif

namespace knnroute {

namespace {

inline __mmask16 tail_mask(std::size_t r) { return static_cast<__mmask16>((1u << r) - 1u); }

// The horizontal sum every f32 path uses (see the header comment).
inline float hsum16(__m512 a) {
    const __m256 t3 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
    const __m128 t6 = _mm_add_ps(_mm256_castps256_ps128(t3), _mm256_extractf128_ps(t3, 1));
    const __m128 t8 = _mm_add_ps(t6, _mm_shuffle_ps(t6, t6, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm_cvtss_f32(_mm_add_ss(t8, _mm_movehdup_ps(t8)));
}

// hsum16 of 16 accumulators at once: r[4 * (p % 4) + p / 4] = hsum16(v[p]), bit for bit.
inline __m512 hsum16_x16(const __m512* v) {
    __m512 w[8], u[4], s[2];
    for (int m = 0; m < 8; ++m)  // lane i + lane i+8 of two sources: 256-bit halves side by side
        w[m] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * m], v[2 * m + 1], 0x44),
                             _mm512_shuffle_f32x4(v[2 * m], v[2 * m + 1], 0xEE));
    for (int m = 0; m < 4; ++m)  // + lane i+4: 128-bit block j of u[m] holds source 4m + j
        u[m] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * m], w[2 * m + 1], 0x88),
                             _mm512_shuffle_f32x4(w[2 * m], w[2 * m + 1], 0xDD));
    for (int m = 0; m < 2; ++m)  // + lane i+2, within 128-bit blocks
        s[m] = _mm512_add_ps(_mm512_shuffle_ps(u[2 * m], u[2 * m + 1], 0x44),
                             _mm512_shuffle_ps(u[2 * m], u[2 * m + 1], 0xEE));
    return _mm512_add_ps(_mm512_shuffle_ps(s[0], s[1], 0x88), _mm512_shuffle_ps(s[0], s[1], 0xDD));  // + lane i+1
}

inline float dot1(const float* q, const float* x, std::size_t d16, std::size_t d, __mmask16 m) {
    __m512 a = _mm512_setzero_ps();
    for (std::size_t j = 0; j < d16; j += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(q + j), _mm512_loadu_ps(x + j), a);
    if (d16 < d) a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + d16), _mm512_maskz_loadu_ps(m, x + d16), a);
    return hsum16(a);
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

void dot_ptrs_f32_avx512(const float* q, const float* const* rows, std::size_t n, std::size_t d, float* out) {
    // Four scattered rows side by side: four independent FMA chains, each dot1's exact sequence.
    const std::size_t d16 = d & ~std::size_t{15};
    const __mmask16 m = tail_mask(d - d16);
    std::size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float *x0 = rows[i], *x1 = rows[i + 1], *x2 = rows[i + 2], *x3 = rows[i + 3];
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        for (std::size_t j = 0; j < d16; j += 16) {
            const __m512 qv = _mm512_loadu_ps(q + j);
            a0 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(x0 + j), a0);
            a1 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(x1 + j), a1);
            a2 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(x2 + j), a2);
            a3 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(x3 + j), a3);
        }
        if (d16 < d) {
            const __m512 qv = _mm512_maskz_loadu_ps(m, q + d16);
            a0 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, x0 + d16), a0);
            a1 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, x1 + d16), a1);
            a2 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, x2 + d16), a2);
            a3 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, x3 + d16), a3);
        }
        out[i] = hsum16(a0);
        out[i + 1] = hsum16(a1);
        out[i + 2] = hsum16(a2);
        out[i + 3] = hsum16(a3);
    }
    for (; i < n; ++i) out[i] = dot1(q, rows[i], d16, d, m);
}

void dot_block_f32_avx512(const float* Q, std::size_t nq, const float* base, std::size_t n, std::size_t d,
                          float* out, std::size_t ldo) {
    const std::size_t d16 = d & ~std::size_t{15};
    const __mmask16 m = tail_mask(d - d16);
    std::size_t j0 = 0;
    // 4 queries x 4 rows: 16 accumulators, 4 row + 4 query loads per 16 FMAs.
    for (; j0 + 4 <= nq; j0 += 4) {
        const float* q[4] = {Q + j0 * d, Q + (j0 + 1) * d, Q + (j0 + 2) * d, Q + (j0 + 3) * d};
        float* o[4] = {out + j0 * ldo, out + (j0 + 1) * ldo, out + (j0 + 2) * ldo, out + (j0 + 3) * ldo};
        std::size_t i = 0;
        for (; i + 4 <= n; i += 4) {
            const float* x0 = base + i * d;
            const float* x1 = x0 + d;
            const float* x2 = x1 + d;
            const float* x3 = x2 + d;
            __m512 acc[16];
            for (int t = 0; t < 16; ++t) acc[t] = _mm512_setzero_ps();
            for (std::size_t j = 0; j < d16; j += 16) {
                const __m512 r0 = _mm512_loadu_ps(x0 + j), r1 = _mm512_loadu_ps(x1 + j), r2 = _mm512_loadu_ps(x2 + j),
                             r3 = _mm512_loadu_ps(x3 + j);
                for (int a = 0; a < 4; ++a) {
                    const __m512 qv = _mm512_loadu_ps(q[a] + j);
                    acc[4 * a + 0] = _mm512_fmadd_ps(qv, r0, acc[4 * a + 0]);
                    acc[4 * a + 1] = _mm512_fmadd_ps(qv, r1, acc[4 * a + 1]);
                    acc[4 * a + 2] = _mm512_fmadd_ps(qv, r2, acc[4 * a + 2]);
                    acc[4 * a + 3] = _mm512_fmadd_ps(qv, r3, acc[4 * a + 3]);
                }
            }
            if (d16 < d) {
                const __m512 r0 = _mm512_maskz_loadu_ps(m, x0 + d16), r1 = _mm512_maskz_loadu_ps(m, x1 + d16),
                             r2 = _mm512_maskz_loadu_ps(m, x2 + d16), r3 = _mm512_maskz_loadu_ps(m, x3 + d16);
                for (int a = 0; a < 4; ++a) {
                    const __m512 qv = _mm512_maskz_loadu_ps(m, q[a] + d16);
                    acc[4 * a + 0] = _mm512_fmadd_ps(qv, r0, acc[4 * a + 0]);
                    acc[4 * a + 1] = _mm512_fmadd_ps(qv, r1, acc[4 * a + 1]);
                    acc[4 * a + 2] = _mm512_fmadd_ps(qv, r2, acc[4 * a + 2]);
                    acc[4 * a + 3] = _mm512_fmadd_ps(qv, r3, acc[4 * a + 3]);
                }
            }
            alignas(64) float r[16];
            _mm512_store_ps(r, hsum16_x16(acc));
            // source p = 4 a + b (query a, row b) sits at lane 4 b + a
            for (int a = 0; a < 4; ++a)
                for (int b = 0; b < 4; ++b) o[a][i + b] = r[4 * b + a];
        }
        for (; i < n; ++i) {
            const float* x = base + i * d;
            for (int a = 0; a < 4; ++a) o[a][i] = dot1(q[a], x, d16, d, m);
        }
    }
    for (; j0 < nq; ++j0) dot_rows_f32_avx512(Q + j0 * d, base, n, d, out + j0 * ldo);
}

}  // namespace knnroute

namespace knnroute {

// --- compact copies ------------------------------------------------------------------------------

namespace {

inline __m512 widen_bf16(__m256i v) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16)); }
inline __m512 widen_f16(__m256i v) { return _mm512_cvtph_ps(v); }

inline __m256i ld16(const std::uint16_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

template <bool Bf16>
inline __m512 widen(__m256i v) {
    if constexpr (Bf16) return widen_bf16(v);
    else return widen_f16(v);
}

template <bool Bf16>
inline float dot_u16(const float* q, const std::uint16_t* x, std::size_t d, __mmask16 m) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    std::size_t j = 0;
    for (; j + 32 <= d; j += 32) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + j), widen<Bf16>(ld16(x + j)), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + j + 16), widen<Bf16>(ld16(x + j + 16)), a1);
    }
    if (j + 16 <= d) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + j), widen<Bf16>(ld16(x + j)), a0);
        j += 16;
    }
    if (j < d)
        a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + j), widen<Bf16>(_mm256_maskz_loadu_epi16(m, x + j)), a1);
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

namespace {

// Sums of the 16 int32 lanes of a, b, c, d, as the 4 lanes of one vector (transposed reduction:
// 13 instructions for 4 rows instead of ~10 per row).
__attribute__((target("avx512f,avx512bw"))) inline __m128i reduce4_epi32(__m512i a, __m512i b, __m512i c, __m512i d) {
    const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
    const __m512i abcd = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
    const __m256i s = _mm256_add_epi32(_mm512_castsi512_si256(abcd), _mm512_extracti64x4_epi64(abcd, 1));
    return _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
}

// VNNI: 64 u8 x s8 products summed into 16 int32 lanes per instruction (exact). Four rows at a time:
// one row's accumulation is a chain of dependent vpdpbusd (latency-bound at ~5 cycles each); four rows
// give eight independent chains, and their horizontal sums share one transposed reduction. The
// integer sums are exact in any order and the float formula is the single-row one, so every row's
// value is identical to the one-row loop's.
template <bool Two>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void i8_vnni_t(const QuantQuery& q, const std::int8_t* base,
                                                                      const float* scale, const std::int32_t* rowsum,
                                                                      std::size_t n, std::size_t d, float* out) {
    const std::size_t d64 = d & ~std::size_t{63};
    const __mmask64 m = (d - d64) ? ((~0ULL) >> (64 - (d - d64))) : 0;
    const float inv254 = 1.f / 254.f;
    std::size_t i = 0;
    if (d >= 64) {
        const __m128 vs = _mm_set1_ps(q.sq), vinv = _mm_set1_ps(inv254);
        for (; i + 4 <= n; i += 4) {
            const std::int8_t* x0 = base + i * d;
            const std::int8_t* x1 = x0 + d;
            const std::int8_t* x2 = x1 + d;
            const std::int8_t* x3 = x2 + d;
            __m512i h0 = _mm512_setzero_si512(), h1 = h0, h2 = h0, h3 = h0;
            __m512i l0 = h0, l1 = h0, l2 = h0, l3 = h0;
            auto step = [&](__m512i v0, __m512i v1, __m512i v2, __m512i v3, std::size_t j) KNNROUTE_VNNI_LAMBDA {
                const __m512i qh = _mm512_loadu_si512(q.hi_u8 + j), ql = _mm512_loadu_si512(q.lo_u8 + j);
                h0 = _mm512_dpbusd_epi32(h0, qh, v0);
                h1 = _mm512_dpbusd_epi32(h1, qh, v1);
                h2 = _mm512_dpbusd_epi32(h2, qh, v2);
                h3 = _mm512_dpbusd_epi32(h3, qh, v3);
                if constexpr (Two) {
                    l0 = _mm512_dpbusd_epi32(l0, ql, v0);
                    l1 = _mm512_dpbusd_epi32(l1, ql, v1);
                    l2 = _mm512_dpbusd_epi32(l2, ql, v2);
                    l3 = _mm512_dpbusd_epi32(l3, ql, v3);
                }
            };
            std::size_t j = 0;
            for (; j < d64; j += 64)
                step(_mm512_loadu_si512(x0 + j), _mm512_loadu_si512(x1 + j), _mm512_loadu_si512(x2 + j),
                     _mm512_loadu_si512(x3 + j), j);
            if (j < d)  // masked-off x bytes are 0, so the padded query bytes add nothing
                step(_mm512_maskz_loadu_epi8(m, x0 + j), _mm512_maskz_loadu_epi8(m, x1 + j),
                     _mm512_maskz_loadu_epi8(m, x2 + j), _mm512_maskz_loadu_epi8(m, x3 + j), j);
            const __m128i off = _mm_slli_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rowsum + i)), 7);
            const __m128i sh = _mm_sub_epi32(reduce4_epi32(h0, h1, h2, h3), off);
            // scale[i] * sq * (float(H) + float(L) * (1/254)), evaluated as in the one-row loop (one
            // digit: L = 0, and fma(0, 1/254, H) == H).
            __m128 f = _mm_cvtepi32_ps(sh);
            if constexpr (Two) {
                const __m128i sl = _mm_sub_epi32(reduce4_epi32(l0, l1, l2, l3), off);
                f = _mm_fmadd_ps(_mm_cvtepi32_ps(sl), vinv, f);
            }
            _mm_storeu_ps(out + i, _mm_mul_ps(_mm_mul_ps(_mm_loadu_ps(scale + i), vs), f));
        }
    }
    for (; i < n; ++i) {
        const std::int8_t* x = base + i * d;
        __m512i h = _mm512_setzero_si512(), l = _mm512_setzero_si512();
        std::size_t j = 0;
        for (; j < d64; j += 64) {
            const __m512i xv = _mm512_loadu_si512(x + j);
            h = _mm512_dpbusd_epi32(h, _mm512_loadu_si512(q.hi_u8 + j), xv);
            if constexpr (Two) l = _mm512_dpbusd_epi32(l, _mm512_loadu_si512(q.lo_u8 + j), xv);
        }
        if (j < d) {
            const __m512i xv = _mm512_maskz_loadu_epi8(m, x + j);
            h = _mm512_dpbusd_epi32(h, _mm512_loadu_si512(q.hi_u8 + j), xv);
            if constexpr (Two) l = _mm512_dpbusd_epi32(l, _mm512_loadu_si512(q.lo_u8 + j), xv);
        }
        const std::int32_t off = 128 * rowsum[i];
        const std::int32_t sh = _mm512_reduce_add_epi32(h) - off, sl = Two ? _mm512_reduce_add_epi32(l) - off : 0;
        out[i] = scale[i] * q.sq * std::fma(static_cast<float>(sl), inv254, static_cast<float>(sh));
    }
}

void i8_vnni(const QuantQuery& q, const std::int8_t* base, const float* scale, const std::int32_t* rowsum,
             std::size_t n, std::size_t d, float* out) {
    if (q.two_digits) i8_vnni_t<true>(q, base, scale, rowsum, n, d, out);
    else i8_vnni_t<false>(q, base, scale, rowsum, n, d, out);
}

// Four one-digit queries (lo == 0) x four rows per step: 16 independent vpdpbusd chains, each 64-byte
// row chunk loaded once for four queries. Per row, the value equals i8_vnni's for lo == 0 bit for bit
// (fma(0, 1/254, H) == H and the same (scale * sq) * H product); leftover rows go through i8_vnni.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void i8_vnni_4q(const QuantQuery* qs, const std::int8_t* base,
                                                                       const float* scale, const std::int32_t* rowsum,
                                                                       std::size_t n, std::size_t d, float* out,
                                                                       std::size_t ldo) {
    const std::size_t d64 = d & ~std::size_t{63};
    const __mmask64 m = (d - d64) ? ((~0ULL) >> (64 - (d - d64))) : 0;
    const std::uint8_t* q0 = qs[0].hi_u8;
    const std::uint8_t* q1 = qs[1].hi_u8;
    const std::uint8_t* q2 = qs[2].hi_u8;
    const std::uint8_t* q3 = qs[3].hi_u8;
    const __m128 s0 = _mm_set1_ps(qs[0].sq), s1 = _mm_set1_ps(qs[1].sq), s2 = _mm_set1_ps(qs[2].sq),
                 s3 = _mm_set1_ps(qs[3].sq);
    std::size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const std::int8_t* x0 = base + i * d;
        const std::int8_t* x1 = x0 + d;
        const std::int8_t* x2 = x1 + d;
        const std::int8_t* x3 = x2 + d;
        __m512i a00 = _mm512_setzero_si512(), a01 = a00, a02 = a00, a03 = a00;
        __m512i a10 = a00, a11 = a00, a12 = a00, a13 = a00;
        __m512i a20 = a00, a21 = a00, a22 = a00, a23 = a00;
        __m512i a30 = a00, a31 = a00, a32 = a00, a33 = a00;
        auto step = [&](__m512i v0, __m512i v1, __m512i v2, __m512i v3, std::size_t j) KNNROUTE_VNNI_LAMBDA {
            const __m512i u0 = _mm512_loadu_si512(q0 + j), u1 = _mm512_loadu_si512(q1 + j);
            const __m512i u2 = _mm512_loadu_si512(q2 + j), u3 = _mm512_loadu_si512(q3 + j);
            a00 = _mm512_dpbusd_epi32(a00, u0, v0);
            a01 = _mm512_dpbusd_epi32(a01, u0, v1);
            a02 = _mm512_dpbusd_epi32(a02, u0, v2);
            a03 = _mm512_dpbusd_epi32(a03, u0, v3);
            a10 = _mm512_dpbusd_epi32(a10, u1, v0);
            a11 = _mm512_dpbusd_epi32(a11, u1, v1);
            a12 = _mm512_dpbusd_epi32(a12, u1, v2);
            a13 = _mm512_dpbusd_epi32(a13, u1, v3);
            a20 = _mm512_dpbusd_epi32(a20, u2, v0);
            a21 = _mm512_dpbusd_epi32(a21, u2, v1);
            a22 = _mm512_dpbusd_epi32(a22, u2, v2);
            a23 = _mm512_dpbusd_epi32(a23, u2, v3);
            a30 = _mm512_dpbusd_epi32(a30, u3, v0);
            a31 = _mm512_dpbusd_epi32(a31, u3, v1);
            a32 = _mm512_dpbusd_epi32(a32, u3, v2);
            a33 = _mm512_dpbusd_epi32(a33, u3, v3);
        };
        std::size_t j = 0;
        for (; j < d64; j += 64)
            step(_mm512_loadu_si512(x0 + j), _mm512_loadu_si512(x1 + j), _mm512_loadu_si512(x2 + j),
                 _mm512_loadu_si512(x3 + j), j);
        if (j < d)  // masked-off x bytes are 0, so the padded query bytes add nothing
            step(_mm512_maskz_loadu_epi8(m, x0 + j), _mm512_maskz_loadu_epi8(m, x1 + j),
                 _mm512_maskz_loadu_epi8(m, x2 + j), _mm512_maskz_loadu_epi8(m, x3 + j), j);
        const __m128i off = _mm_slli_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rowsum + i)), 7);
        const __m128 sc = _mm_loadu_ps(scale + i);
        _mm_storeu_ps(out + i, _mm_mul_ps(_mm_mul_ps(sc, s0), _mm_cvtepi32_ps(_mm_sub_epi32(reduce4_epi32(a00, a01, a02, a03), off))));
        _mm_storeu_ps(out + ldo + i, _mm_mul_ps(_mm_mul_ps(sc, s1), _mm_cvtepi32_ps(_mm_sub_epi32(reduce4_epi32(a10, a11, a12, a13), off))));
        _mm_storeu_ps(out + 2 * ldo + i, _mm_mul_ps(_mm_mul_ps(sc, s2), _mm_cvtepi32_ps(_mm_sub_epi32(reduce4_epi32(a20, a21, a22, a23), off))));
        _mm_storeu_ps(out + 3 * ldo + i, _mm_mul_ps(_mm_mul_ps(sc, s3), _mm_cvtepi32_ps(_mm_sub_epi32(reduce4_epi32(a30, a31, a32, a33), off))));
    }
    if (i < n)
        for (std::size_t jq = 0; jq < 4; ++jq)
            i8_vnni(qs[jq], base + i * d, scale + i, rowsum + i, n - i, d, out + jq * ldo + i);
}

// Packed layout for the batch kernel: groups of 16 rows; per group, for each 4-byte step c of the
// row, the 16 rows' 4 bytes side by side (64 bytes = one vector), each byte x stored as x + 128 (u8,
// = x ^ 0x80). Bytes past d and rows past n are x = 0 (0x80). vpdpbusd then takes the row bytes as
// its unsigned operand and the query's 4 hi digits broadcast as the signed one, so the 16 int32 lanes
// are 16 rows and no horizontal sum is needed: sum (x + 128) q = <q, x> + 128 * sum(q).
void pack_i8_block(const std::int8_t* base, std::size_t n, std::size_t d, std::size_t d4, std::vector<std::uint8_t>& buf) {
    const std::size_t groups = (n + 15) / 16;
    buf.resize(groups * d4 * 64);
    std::uint32_t* out = reinterpret_cast<std::uint32_t*>(buf.data());
    const std::size_t full = d / 4;  // 4-byte steps entirely inside the row
    for (std::size_t g = 0; g < groups; ++g) {
        std::uint32_t* og = out + g * d4 * 16;
        for (std::size_t r = 0; r < 16; ++r) {
            const std::size_t row = g * 16 + r;
            if (row >= n) {
                for (std::size_t c = 0; c < d4; ++c) og[c * 16 + r] = 0x80808080u;
                continue;
            }
            const std::int8_t* x = base + row * d;
            for (std::size_t c = 0; c < full; ++c) {
                std::uint32_t v;
                std::memcpy(&v, x + 4 * c, 4);
                og[c * 16 + r] = v ^ 0x80808080u;
            }
            if (full < d4) {
                std::uint8_t t[4] = {0x80, 0x80, 0x80, 0x80};
                for (std::size_t b = 0; 4 * full + b < d; ++b) t[b] = static_cast<std::uint8_t>(x[4 * full + b]) ^ 0x80u;
                std::uint32_t v;
                std::memcpy(&v, t, 4);
                og[full * 16 + r] = v;
            }
        }
    }
}

// NJ one-digit queries x 16 packed rows per step: NJ accumulators whose lanes are rows; each packed
// vector is loaded once for NJ queries, each query step is a 4-byte broadcast. H = acc - 128 * hi_sum
// is the same exact integer as the row kernels', and the value (scale * sq) * float(H) the same float.
template <int NJ>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void i8_packed_tile(const QuantQuery* qs, const std::uint8_t* pk,
                                                                           const float* scale, std::size_t n,
                                                                           std::size_t d4, float* out, std::size_t ldo) {
    const std::int8_t* qp[NJ];
    __m512i corr[NJ];
    __m512 sq[NJ];
    for (int t = 0; t < NJ; ++t) {
        qp[t] = qs[t].hi;
        corr[t] = _mm512_set1_epi32(128 * qs[t].hi_sum);
        sq[t] = _mm512_set1_ps(qs[t].sq);
    }
    const std::size_t groups = (n + 15) / 16;
    for (std::size_t g = 0; g < groups; ++g) {
        const std::uint8_t* p = pk + g * d4 * 64;
        __m512i acc[NJ];
        for (int t = 0; t < NJ; ++t) acc[t] = _mm512_setzero_si512();
        for (std::size_t c = 0; c < d4; ++c) {
            const __m512i rv = _mm512_loadu_si512(p + c * 64);
            for (int t = 0; t < NJ; ++t) {
                std::int32_t q4;
                std::memcpy(&q4, qp[t] + 4 * c, 4);
                acc[t] = _mm512_dpbusd_epi32(acc[t], rv, _mm512_set1_epi32(q4));
            }
        }
        const std::size_t rows = std::min<std::size_t>(16, n - g * 16);
        const __mmask16 mk = static_cast<__mmask16>((1u << rows) - 1u);
        const __m512 sc = _mm512_maskz_loadu_ps(mk, scale + g * 16);
        for (int t = 0; t < NJ; ++t) {
            const __m512 f = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[t], corr[t]));
            _mm512_mask_storeu_ps(out + t * ldo + g * 16, mk, _mm512_mul_ps(_mm512_mul_ps(sc, sq[t]), f));
        }
    }
}

void i8_vnni_packed(const QuantQuery* qs, std::size_t nq, const std::uint8_t* pk, const float* scale, std::size_t n,
                    std::size_t d4, float* out, std::size_t ldo) {
    std::size_t j = 0;
    for (; j + 8 <= nq; j += 8) i8_packed_tile<8>(qs + j, pk, scale, n, d4, out + j * ldo, ldo);
    switch (nq - j) {
        case 7: i8_packed_tile<7>(qs + j, pk, scale, n, d4, out + j * ldo, ldo); break;
        case 6: i8_packed_tile<6>(qs + j, pk, scale, n, d4, out + j * ldo, ldo); break;
        case 5: i8_packed_tile<5>(qs + j, pk, scale, n, d4, out + j * ldo, ldo); break;
        case 4: i8_packed_tile<4>(qs + j, pk, scale, n, d4, out + j * ldo, ldo); break;
        case 3: i8_packed_tile<3>(qs + j, pk, scale, n, d4, out + j * ldo, ldo); break;
        case 2: i8_packed_tile<2>(qs + j, pk, scale, n, d4, out + j * ldo, ldo); break;
        case 1: i8_packed_tile<1>(qs + j, pk, scale, n, d4, out + j * ldo, ldo); break;
        default: break;
    }
}

}  // namespace

// "avx512-vnni".
void dot_rows_i8_avx512_vnni(const QuantQuery& q, const std::int8_t* base, const float* scale,
                             const std::int32_t* rowsum, std::size_t n, std::size_t d, float* out) {
    i8_vnni(q, base, scale, rowsum, n, d, out);
}

void dot_block_i8_avx512_vnni(const QuantQuery* qs, std::size_t nq, const std::int8_t* base, const float* scale,
                              const std::int32_t* rowsum, std::size_t n, std::size_t d, float* out, std::size_t ldo,
                              I8Pack* pack) {
    if (d < 64) {
        for (std::size_t j = 0; j < nq; ++j) i8_vnni(qs[j], base, scale, rowsum, n, d, out + j * ldo);
        return;
    }
    if (pack == nullptr) {
        std::size_t j = 0;
        for (; j + 4 <= nq; j += 4) i8_vnni_4q(qs + j, base, scale, rowsum, n, d, out + j * ldo, ldo);
        for (; j < nq; ++j) i8_vnni(qs[j], base, scale, rowsum, n, d, out + j * ldo);
        return;
    }
    const std::size_t d4 = (d + 3) / 4;
    if (pack->src != base || pack->n != n) {
        pack_i8_block(base, n, d, d4, pack->buf);
        pack->src = base;
        pack->n = n;
    }
    i8_vnni_packed(qs, nq, pack->buf.data(), scale, n, d4, out, ldo);
}

std::size_t select_ub_avx512(const float* a, const float* err, float eq, float T, std::size_t n, std::uint32_t* idx) {
    const __m512 t = _mm512_set1_ps(select_margin_threshold(T)), vq = _mm512_set1_ps(eq), one = _mm512_set1_ps(1.f);
    const __m512i step = _mm512_set1_epi32(16);
    __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    std::size_t w = 0, i = 0;
    for (; i + 16 <= n; i += 16, iota = _mm512_add_epi32(iota, step)) {
        const __m512 e = _mm512_loadu_ps(err + i);
        const __m512 ub = _mm512_add_ps(_mm512_loadu_ps(a + i), _mm512_add_ps(e, _mm512_mul_ps(vq, _mm512_add_ps(one, e))));
        const __mmask16 k = _mm512_cmp_ps_mask(ub, t, _CMP_GE_OQ);
        // Unconditional (idx has 16 spare slots): a few percent of the rows pass, spread over a third
        // or more of the 16-row groups, so a test per group mispredicts often. Compress in a register,
        // then a plain store: the memory form of vpcompressd is microcoded and slow on AMD Zen 4.
        _mm512_storeu_si512(idx + w, _mm512_maskz_compress_epi32(k, iota));
        w += static_cast<std::size_t>(__builtin_popcount(k));
    }
    const float ts = select_margin_threshold(T);
    for (; i < n; ++i)
        if (a[i] + (err[i] + eq * (1.f + err[i])) >= ts) idx[w++] = static_cast<std::uint32_t>(i);
    return w;
}

}  // namespace knnroute

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // __x86_64__ (on other architectures this file compiles to nothing)
