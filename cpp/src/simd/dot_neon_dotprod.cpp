// The "neon-dotprod" int8 row kernel: the AArch64 int8 scan (i8_neon.hpp) on sdot (the dotprod
// extension: ARMv8.2+, e.g. Graviton 2/3/4, Ampere Altra, Apple M1 and later). Every other kernel of
// the "neon-dotprod" set is the "neon" one (isa.cpp). This file alone is compiled with +dotprod
// (CMakeLists.txt), and holds no standard-library inline code that the linker could pick for a
// caller on a CPU without it; it runs only when the CPU reports dotprod (isa.cpp).
#include <cstddef>
#include <cstdint>

#include "knnroute/isa.hpp"

#if defined(__aarch64__)
#include <arm_neon.h>

namespace knnroute {

#include "i8_neon.hpp"

void dot_rows_i8_neon_dotprod(const QuantQuery& q, const std::int8_t* base, const float* scale,
                              const std::int32_t*, std::size_t n, std::size_t d, float* out) {
    if (q.two_digits) i8_scan_neon<true, true>(q, base, scale, n, d, out);
    else i8_scan_neon<false, true>(q, base, scale, n, d, out);
}

}  // namespace knnroute
#endif  // __aarch64__ (on other architectures this file compiles to nothing)
