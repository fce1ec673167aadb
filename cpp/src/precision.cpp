// Reduced-precision encodings (scalar, portable): name parsing, float -> bf16 / f16 rounding, the
// row encoder with its error bound. The scalar kernels over these encodings are in scalar.cpp.
#include "knnroute/precision.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace knnroute {

namespace {
inline std::uint32_t bits(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float from_bits(std::uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
}  // namespace

Precision parse_precision(const std::string& name) {
    if (name == "f32" || name == "float32") return Precision::f32;
    if (name == "bf16" || name == "bfloat16") return Precision::bf16;
    if (name == "f16" || name == "float16") return Precision::f16;
    if (name == "int8") return Precision::int8;
    throw std::invalid_argument("unknown precision '" + name + "': use one of f32, bf16, f16, int8");
}

const char* precision_name(Precision p) {
    switch (p) {
        case Precision::f32: return "f32";
        case Precision::bf16: return "bf16";
        case Precision::f16: return "f16";
        default: return "int8";
    }
}

std::size_t precision_value_bytes(Precision p) {
    switch (p) {
        case Precision::f32: return 0;
        case Precision::int8: return 1;
        default: return 2;
    }
}

std::uint16_t f32_to_bf16(float x) {
    std::uint32_t b = bits(x);
    if ((b & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((b >> 16) | 0x40u);  // quiet NaN
    b += 0x7fffu + ((b >> 16) & 1u);
    return static_cast<std::uint16_t>(b >> 16);
}


// Round-to-nearest-even float -> half (F. Giesen's float_to_half_fast3_rtne, public domain).
std::uint16_t f32_to_f16(float x) {
    std::uint32_t f = bits(x);
    const std::uint32_t f32infty = 255u << 23, f16max = (127u + 16u) << 23;
    const std::uint32_t denorm_magic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
    const std::uint32_t sign = f & 0x80000000u;
    f ^= sign;
    std::uint16_t o;
    if (f >= f16max) {
        o = f > f32infty ? 0x7e00 : 0x7c00;
    } else if (f < (113u << 23)) {  // result is subnormal or zero: let the FPU round
        const float ff = from_bits(f) + from_bits(denorm_magic);
        o = static_cast<std::uint16_t>(bits(ff) - denorm_magic);
    } else {
        const std::uint32_t mant_odd = (f >> 13) & 1u;
        f += (static_cast<std::uint32_t>(15 - 127) << 23) + 0xfffu;
        f += mant_odd;
        o = static_cast<std::uint16_t>(f >> 13);
    }
    return static_cast<std::uint16_t>(o | (sign >> 16));
}

double rounding_slack(std::size_t d) {
    // Each float32 dot product of length d (sequential or lane-wise + tree) errs by at most
    // gamma_{d+8} * sum |q_j x_j| <= gamma_{d+8} * (1 + 1e-2) for unit q and |x^| <= 1 + err.
    const double u = std::ldexp(1.0, -24);
    const double n = static_cast<double>(d) + 8.0;
    const double gamma = n * u / (1.0 - n * u);
    return 2.0 * 1.02 * gamma + 1e-7;
}

void encode_rows(Precision p, const float* X, std::size_t n, std::size_t d, std::uint16_t* out_u16,
                 std::int8_t* out_i8, float* scale, float* err) {
    const double slack = rounding_slack(d);
    for (std::size_t i = 0; i < n; ++i) {
        const float* x = X + i * d;
        double e2 = 0.0;
        if (p == Precision::bf16 || p == Precision::f16) {
            std::uint16_t* o = out_u16 + i * d;
            for (std::size_t j = 0; j < d; ++j) {
                o[j] = p == Precision::bf16 ? f32_to_bf16(x[j]) : f32_to_f16(x[j]);
                const double back = p == Precision::bf16 ? bf16_to_f32(o[j]) : f16_to_f32(o[j]);
                const double r = static_cast<double>(x[j]) - back;
                e2 += r * r;
            }
        } else if (p == Precision::int8) {
            float mx = 0.f;
            for (std::size_t j = 0; j < d; ++j) mx = std::max(mx, std::fabs(x[j]));
            const float s = mx > 0.f ? mx / 127.f : 1.f;
            scale[i] = s;
            std::int8_t* o = out_i8 + i * d;
            for (std::size_t j = 0; j < d; ++j) {
                long v = std::lrint(static_cast<double>(x[j]) / s);
                v = std::min(127L, std::max(-127L, v));
                o[j] = static_cast<std::int8_t>(v);
                const double r = static_cast<double>(x[j]) - static_cast<double>(s) * static_cast<double>(v);
                e2 += r * r;
            }
        } else {
            throw std::invalid_argument("encode_rows: f32 has no compact copy");
        }
        err[i] = static_cast<float>(std::sqrt(e2) * (1.0 + 1e-6) + slack);
    }
}

}  // namespace knnroute
