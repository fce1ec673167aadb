// Reduced-precision storage of support rows, for the memory-bound single-query path.
//
// A SupportSet always keeps its float32 unit rows (the exact reference). With a reduced precision it
// also keeps a compact copy (bf16: 2 bytes/value, f16: 2, int8: 1 + a float32 scale per row) and, per
// row, a rigorous bound err[r] on |<q, x_r> - approx(q, x_r)| for any unit query q:
//     err[r] = ||x_r - dequant(x_r)||_2 * (1 + 1e-6)  +  slack(d)
// (Cauchy-Schwarz: |<q, x - x^>| <= ||q|| ||x - x^||; the query stays float32, so it is not rounded),
// where slack(d) covers the float32 rounding of both the approximate and the exact dot products.
// The search scans the compact copy, keeps every row whose upper bound approx + err reaches the k-th
// largest lower bound approx - err, and re-ranks those candidates with the float32 kernel. Every true
// top-k row is provably among the candidates, so the result equals the float32 search bit for bit
// (same indices, same similarities, same tie rule); precision only changes speed and memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace knnroute {

enum class Precision { f32 = 0, bf16 = 1, f16 = 2, int8 = 3 };

Precision parse_precision(const std::string& name);  // "f32", "bf16", "f16", "int8"; throws invalid_argument
const char* precision_name(Precision p);
// Bytes of the compact copy per value (0 for f32: nothing beyond the float32 rows).
std::size_t precision_value_bytes(Precision p);

// Scalar conversions (round to nearest even; f16 keeps subnormals, overflows to inf cannot happen for
// unit rows). Decoding is exact.
std::uint16_t f32_to_bf16(float x);
std::uint16_t f32_to_f16(float x);
// The decoders are inline: the scalar kernels (scalar.cpp) call them once per value.
inline float bf16_to_f32(std::uint16_t h) {
    const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline float f16_to_f32(std::uint16_t h) {
    auto bits = [](float f) {
        std::uint32_t u;
        std::memcpy(&u, &f, 4);
        return u;
    };
    auto from_bits = [](std::uint32_t u) {
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    };
    const std::uint32_t shifted_exp = 0x7c00u << 13;
    std::uint32_t o = (static_cast<std::uint32_t>(h) & 0x7fffu) << 13;
    const std::uint32_t exp = shifted_exp & o;
    o += (127u - 15u) << 23;
    if (exp == shifted_exp) {
        o += (128u - 16u) << 23;  // inf / NaN
    } else if (exp == 0) {        // zero / subnormal: renormalise
        o += 1u << 23;
        o = bits(from_bits(o) - from_bits(113u << 23));
    }
    o |= (static_cast<std::uint32_t>(h) & 0x8000u) << 16;
    return from_bits(o);
}

// Encodes n unit rows of X (n, d) into the compact form. out_u16 (n*d) for bf16/f16, out_i8 (n*d) and
// scale (n) for int8 (x ~ scale[r] * q8, symmetric, |q8| <= 127). err (n) receives the bound above.
void encode_rows(Precision p, const float* X, std::size_t n, std::size_t d, std::uint16_t* out_u16,
                 std::int8_t* out_i8, float* scale, float* err);

// float32 rounding slack of one approximate plus one exact dot product of unit vectors of length d.
double rounding_slack(std::size_t d);

}  // namespace knnroute
