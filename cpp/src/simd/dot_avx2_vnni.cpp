// The "avx2-vnni" int8 row kernel: the AVX2 int8 scan (i8_avx2.hpp) on AVX-VNNI's VEX-encoded 256-bit
// vpdpbusd (Intel Alder Lake / Sapphire Rapids and later, AMD Zen 5). Every other kernel of the
// "avx2-vnni" set is the "avx2" one (isa.cpp). A file of its own so that no other AVX2 code is
// compiled with VNNI enabled.
#include <cstddef>
#include <cstdint>

#include "knnroute/isa.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avxvnni"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avxvnni")
#endif

namespace knnroute {

#include "i8_avx2.hpp"

void dot_rows_i8_avx2_vnni(const QuantQuery& q, const std::int8_t* base, const float* scale,
                           const std::int32_t* rowsum, std::size_t n, std::size_t d, float* out) {
    if (q.two_digits) i8_scan<true, true>(q, base, scale, rowsum, n, d, out);
    else i8_scan<false, true>(q, base, scale, rowsum, n, d, out);
}

}  // namespace knnroute

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // __x86_64__
