// The AVX2 int8 scan (one template, two instruction choices): included inside the target region of
// dot_avx2.cpp (Vnni = false: vpmaddubsw / vpmaddwd) and of dot_avx2_vnni.cpp (Vnni = true: AVX-VNNI's
// 256-bit vpdpbusd). Internal to those two files; needs <immintrin.h> and knnroute/isa.hpp first and is
// included inside namespace knnroute.
#pragma once

namespace {

// Sums of the 8 int32 lanes of a, b, c, d as the 4 lanes of one vector.
inline __m128i reduce4_epi32(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i abcd = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
    return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

// Exact int32 sums of R rows x one or two query digits, 32 values a step. Without VNNI, vpmaddubsw
// needs an unsigned operand: |q| (<= 127, once per step for all rows) times sign(q) * x (|x| <= 127, one
// vpsignb per row), so a pair of products is at most 2 * 127 * 127 = 32,258 and never saturates int16;
// vpmaddwd by ones widens the pairs to int32 (4 instructions per row per 32 values and digit).
// With AVX-VNNI, one vpdpbusd of the u8 digit copy (q + 128) and the s8 row does the same, and the
// result is corrected by 128 x the row sum. The d % 32 tail is summed in scalar with the same operand
// (signed digit, or u8 digit before the correction), so the integers equal scalar's exactly.
// R rows side by side give 2R independent accumulation chains and share one horizontal reduction.
template <int R, bool Two, bool Vnni>
inline void i8_rows(const QuantQuery& q, const std::int8_t* base, const float* scale, const std::int32_t* rowsum,
                    std::size_t d, float* out) {
    const std::size_t d32 = d & ~std::size_t{31};
    const std::int8_t* x[R];
    __m256i h[4], l[4];
    for (int r = 0; r < 4; ++r) h[r] = l[r] = _mm256_setzero_si256();
    for (int r = 0; r < R; ++r) x[r] = base + static_cast<std::size_t>(r) * d;
    const std::int8_t* qh = Vnni ? reinterpret_cast<const std::int8_t*>(q.hi_u8) : q.hi;
    const std::int8_t* ql = Vnni ? reinterpret_cast<const std::int8_t*>(q.lo_u8) : q.lo;
    const __m256i ones = _mm256_set1_epi16(1);
    for (std::size_t j = 0; j < d32; j += 32) {
        const __m256i vh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh + j));
        __m256i vl = _mm256_setzero_si256();
        if constexpr (Two) vl = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + j));
        // |q| once per step for all R rows (unused, and dropped by the compiler, on the VNNI path)
        const __m256i ah = _mm256_abs_epi8(vh);
        __m256i al = _mm256_setzero_si256();
        if constexpr (Two) al = _mm256_abs_epi8(vl);
        for (int r = 0; r < R; ++r) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[r] + j));
            if constexpr (Vnni) {
                h[r] = _mm256_dpbusd_avx_epi32(h[r], vh, v);
                if constexpr (Two) l[r] = _mm256_dpbusd_avx_epi32(l[r], vl, v);
            } else {
                h[r] = _mm256_add_epi32(h[r], _mm256_madd_epi16(_mm256_maddubs_epi16(ah, _mm256_sign_epi8(v, vh)), ones));
                if constexpr (Two)
                    l[r] = _mm256_add_epi32(l[r], _mm256_madd_epi16(_mm256_maddubs_epi16(al, _mm256_sign_epi8(v, vl)), ones));
            }
        }
    }
    alignas(16) std::int32_t sh[4], sl[4];
    _mm_store_si128(reinterpret_cast<__m128i*>(sh), reduce4_epi32(h[0], h[1], h[2], h[3]));
    if constexpr (Two) _mm_store_si128(reinterpret_cast<__m128i*>(sl), reduce4_epi32(l[0], l[1], l[2], l[3]));
    for (int r = 0; r < R; ++r) {
        std::int32_t H = sh[r], L = Two ? sl[r] : 0;
        for (std::size_t j = d32; j < d; ++j) {
            H += (Vnni ? static_cast<std::int32_t>(q.hi_u8[j]) : static_cast<std::int32_t>(q.hi[j])) * x[r][j];
            if constexpr (Two)
                L += (Vnni ? static_cast<std::int32_t>(q.lo_u8[j]) : static_cast<std::int32_t>(q.lo[j])) * x[r][j];
        }
        if constexpr (Vnni) {
            H -= 128 * rowsum[r];
            if constexpr (Two) L -= 128 * rowsum[r];
        }
        out[r] = scale[r] * q.sq * (static_cast<float>(H) + static_cast<float>(L) * (1.f / 254.f));
    }
}

template <bool Two, bool Vnni>
inline void i8_scan(const QuantQuery& q, const std::int8_t* base, const float* scale, const std::int32_t* rowsum,
                    std::size_t n, std::size_t d, float* out) {
    std::size_t i = 0;
    for (; i + 4 <= n; i += 4) i8_rows<4, Two, Vnni>(q, base + i * d, scale + i, rowsum + i, d, out + i);
    for (; i < n; ++i) i8_rows<1, Two, Vnni>(q, base + i * d, scale + i, rowsum + i, d, out + i);
}

}  // namespace

