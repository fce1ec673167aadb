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
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

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

void dot_ptrs_f32_avx2(const float* q, const float* const* rows, std::size_t n, std::size_t d, float* out) {
    // Four scattered rows side by side: four independent FMA chains, each dot1's exact sequence.
    const std::size_t d8 = d & ~std::size_t{7};
    const __m256i m = tail_mask(d - d8);
    std::size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float *x0 = rows[i], *x1 = rows[i + 1], *x2 = rows[i + 2], *x3 = rows[i + 3];
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        for (std::size_t j = 0; j < d8; j += 8) {
            const __m256 qv = _mm256_loadu_ps(q + j);
            a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(x0 + j), a0);
            a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(x1 + j), a1);
            a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(x2 + j), a2);
            a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(x3 + j), a3);
        }
        if (d8 < d) {
            const __m256 qv = _mm256_maskload_ps(q + d8, m);
            a0 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(x0 + d8, m), a0);
            a1 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(x1 + d8, m), a1);
            a2 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(x2 + d8, m), a2);
            a3 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(x3 + d8, m), a3);
        }
        out[i] = hsum(a0);
        out[i + 1] = hsum(a1);
        out[i + 2] = hsum(a2);
        out[i + 3] = hsum(a3);
    }
    for (; i < n; ++i) out[i] = dot1(q, rows[i], d8, d, m);
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

// --- the batch int8 kernel (one-digit queries) ----------------------------------------------------

namespace {

// Packed layout: groups of 8 rows; per group, for each 4-byte step c of the row, the 8 rows' 4 bytes
// side by side (32 bytes = one vector), each byte x stored as x + 128 (u8, = x ^ 0x80). Bytes past d
// and rows past n are x = 0 (0x80). The query's 4 digits are a broadcast, the 8 int32 lanes are 8
// rows, and no horizontal sum is needed.
void pack_i8_block_avx2(const std::int8_t* base, std::size_t n, std::size_t d, std::size_t d4,
                        std::vector<std::uint8_t>& buf) {
    const std::size_t groups = (n + 7) / 8, full = d / 4;  // full: 4-byte steps entirely inside the row
    buf.assign(groups * d4 * 32, 0x80);
    for (std::size_t row = 0; row < n; ++row) {
        std::uint8_t* og = buf.data() + (row / 8) * d4 * 32 + (row % 8) * 4;
        const std::int8_t* x = base + row * d;
        for (std::size_t c = 0; c < full; ++c) {
            std::uint32_t v;
            std::memcpy(&v, x + 4 * c, 4);
            v ^= 0x80808080u;
            std::memcpy(og + c * 32, &v, 4);
        }
        for (std::size_t j = 4 * full; j < d; ++j) og[full * 32 + (j - 4 * full)] = static_cast<std::uint8_t>(x[j]) ^ 0x80u;
    }
}

// Stores the 8 rows' values (scale * sq) * float(acc - corr) of one query (rows < 8: the first only).
inline void store_rows8(__m256i acc, std::int32_t corr, const float* scale, float sq, std::size_t rows, float* out) {
    acc = _mm256_sub_epi32(acc, _mm256_set1_epi32(corr));
    if (rows == 8) {
        _mm256_storeu_ps(out, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(scale), _mm256_set1_ps(sq)), _mm256_cvtepi32_ps(acc)));
        return;
    }
    alignas(32) std::int32_t h[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(h), acc);
    for (std::size_t r = 0; r < rows; ++r) out[r] = scale[r] * sq * static_cast<float>(h[r]);
}

// One query's digits 4c .. 4c + 3, broadcast to the 8 lanes.
inline __m256i bcast4(const std::int8_t* q, std::size_t c) {
    std::int32_t q4;
    std::memcpy(&q4, q + 4 * c, 4);
    return _mm256_set1_epi32(q4);
}

// acc += the 8 rows' 4-byte products with the broadcast digits qb (xu: the packed u8 bytes x + 128).
// Small (|digit| <= 64): vpmaddubsw of xu and qb directly, a pair of products at most 2 * 255 * 64 =
// 32,640 (never saturating int16), then vpmaddwd by ones; the sums carry + 128 * sum(digits), taken
// off at the store. Otherwise: |x| x sign(qb, x) (a pair at most 2 * 127 * 127), 1 more op a product.
template <bool Small>
inline __m256i mac8(__m256i acc, __m256i xu, __m256i ax, __m256i x, __m256i qb, __m256i ones) {
    const __m256i p = Small ? _mm256_maddubs_epi16(xu, qb) : _mm256_maddubs_epi16(ax, _mm256_sign_epi8(qb, x));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
}

// NJ (<= 4) one-digit queries x 2 groups of 8 packed rows per step: per step 2 row vectors serve NJ
// queries, each query's 4 digits one broadcast for both groups; named accumulators (an array of them
// made GCC copy and spill registers in the loop). H is the row kernel's exact integer, and the value
// (scale * sq) * float(H) the same float.
template <int NJ, bool Small>
void i8_packed_tile_avx2(const QuantQuery* qs, const std::uint8_t* pk, const float* scale, std::size_t n,
                         std::size_t d4, float* out, std::size_t ldo) {
    const std::int8_t* q0 = qs[0].hi;
    const std::int8_t* q1 = qs[NJ > 1 ? 1 : 0].hi;
    const std::int8_t* q2 = qs[NJ > 2 ? 2 : 0].hi;
    const std::int8_t* q3 = qs[NJ > 3 ? 3 : 0].hi;
    const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8(static_cast<char>(0x80));
    const std::size_t groups = (n + 7) / 8, gstride = d4 * 32;
    for (std::size_t g = 0; g < groups; g += 2) {
        const bool two = g + 1 < groups;
        const std::uint8_t* p0 = pk + g * gstride;
        const std::uint8_t* p1 = two ? p0 + gstride : p0;  // an odd last group is summed twice, stored once
        const __m256i z = _mm256_setzero_si256();
        __m256i a00 = z, a01 = z, a10 = z, a11 = z, a20 = z, a21 = z, a30 = z, a31 = z;
        for (std::size_t c = 0; c < d4; ++c) {
            const __m256i u0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p0 + c * 32));
            const __m256i u1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p1 + c * 32));
            __m256i x0 = z, x1 = z, ax0 = z, ax1 = z;  // the signed path's x and |x| (unused when Small)
            if constexpr (!Small) {
                x0 = _mm256_xor_si256(u0, flip);
                x1 = _mm256_xor_si256(u1, flip);
                ax0 = _mm256_abs_epi8(x0);
                ax1 = _mm256_abs_epi8(x1);
            }
            __m256i qb = bcast4(q0, c);
            a00 = mac8<Small>(a00, u0, ax0, x0, qb, ones);
            a01 = mac8<Small>(a01, u1, ax1, x1, qb, ones);
            if constexpr (NJ > 1) {
                qb = bcast4(q1, c);
                a10 = mac8<Small>(a10, u0, ax0, x0, qb, ones);
                a11 = mac8<Small>(a11, u1, ax1, x1, qb, ones);
            }
            if constexpr (NJ > 2) {
                qb = bcast4(q2, c);
                a20 = mac8<Small>(a20, u0, ax0, x0, qb, ones);
                a21 = mac8<Small>(a21, u1, ax1, x1, qb, ones);
            }
            if constexpr (NJ > 3) {
                qb = bcast4(q3, c);
                a30 = mac8<Small>(a30, u0, ax0, x0, qb, ones);
                a31 = mac8<Small>(a31, u1, ax1, x1, qb, ones);
            }
        }
        const __m256i acc[4][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
        for (int t = 0; t < NJ; ++t) {
            float* o = out + t * ldo + g * 8;
            const std::int32_t corr = Small ? 128 * qs[t].hi_sum : 0;
            store_rows8(acc[t][0], corr, scale + g * 8, qs[t].sq, std::min<std::size_t>(8, n - g * 8), o);
            if (two)
                store_rows8(acc[t][1], corr, scale + g * 8 + 8, qs[t].sq, std::min<std::size_t>(8, n - g * 8 - 8), o + 8);
        }
    }
}

// Whether every hi digit of the nq queries is within [-64, 64] (the Small path; QuantQuery pads with 0).
bool small_digits(const QuantQuery* qs, std::size_t nq, std::size_t d) {
    __m256i m = _mm256_setzero_si256();  // the largest |digit| seen, as u8 (|-128| = 128)
    for (std::size_t j = 0; j < nq; ++j)
        for (std::size_t i = 0; i < d; i += 32)
            m = _mm256_max_epu8(m, _mm256_abs_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs[j].hi + i))));
    const __m256i lim = _mm256_set1_epi8(64);
    return _mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_max_epu8(m, lim), lim)) == -1;
}

template <int NJ>
void i8_tile(const QuantQuery* qs, const std::uint8_t* pk, const float* scale, std::size_t n, std::size_t d,
             std::size_t d4, float* out, std::size_t ldo) {
    if (small_digits(qs, NJ, d)) i8_packed_tile_avx2<NJ, true>(qs, pk, scale, n, d4, out, ldo);
    else i8_packed_tile_avx2<NJ, false>(qs, pk, scale, n, d4, out, ldo);
}

}  // namespace

void dot_block_i8_avx2(const QuantQuery* qs, std::size_t nq, const std::int8_t* base, const float* scale,
                       const std::int32_t* rowsum, std::size_t n, std::size_t d, float* out, std::size_t ldo,
                       I8Pack* pack) {
    if (pack == nullptr) {  // no scratch: the row kernel per query (bit-identical by construction)
        for (std::size_t j = 0; j < nq; ++j) i8_scan<false, false>(qs[j], base, scale, rowsum, n, d, out + j * ldo);
        return;
    }
    const std::size_t d4 = (d + 3) / 4;
    if (pack->src != base || pack->n != n) {
        pack_i8_block_avx2(base, n, d, d4, pack->buf);
        pack->src = base;
        pack->n = n;
    }
    const std::uint8_t* pk = pack->buf.data();
    std::size_t j = 0;
    for (; j + 4 <= nq; j += 4) i8_tile<4>(qs + j, pk, scale, n, d, d4, out + j * ldo, ldo);
    switch (nq - j) {
        case 3: i8_tile<3>(qs + j, pk, scale, n, d, d4, out + j * ldo, ldo); break;
        case 2: i8_tile<2>(qs + j, pk, scale, n, d, d4, out + j * ldo, ldo); break;
        case 1: i8_tile<1>(qs + j, pk, scale, n, d, d4, out + j * ldo, ldo); break;
        default: break;
    }
}

}  // namespace knnroute

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // __x86_64__ (on other architectures this file compiles to nothing)
