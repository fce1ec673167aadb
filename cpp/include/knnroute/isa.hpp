// Instruction-set dispatch for the similarity kernels.
//
// The kernel set is chosen once, on first use: from $KNNROUTE_ISA if set ("scalar", "avx2",
// "avx2-vnni", "avx512", "avx512-vnni" on x86-64; "scalar", "neon", "neon-dotprod" on aarch64; asking
// for an ISA the CPU lacks, or one not compiled for this architecture, is an error), otherwise the
// widest ISA the CPU supports. "avx2" is AVX2 + FMA + F16C (int8 by vpmaddubsw / vpmaddwd);
// "avx2-vnni" the same set with the int8 kernels on AVX-VNNI's 256-bit vpdpbusd. "avx512" is AVX-512
// F/BW/VL/DQ without VNNI (int8 by the AVX2 kernel); "avx512-vnni" is the same set with the int8 row and batch
// kernels on vpdpbusd. "neon" is AArch64 Advanced SIMD (f16 by fcvtl, int8 by smull/sadalp);
// "neon-dotprod" the same set with the int8 kernels on sdot (the dotprod extension, ARMv8.2+). Each level
// is a full kernel set, so every level can be forced (and tested) on a CPU that has the widest.
// `set_isa` switches it later (a test hook; not meant for concurrent use with running searches).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace knnroute {

// Narrowest first within an architecture; a level of the other architecture is never available.
enum class Isa { scalar = 0, avx2 = 1, avx2_vnni = 2, avx512 = 3, avx512_vnni = 4, neon = 5, neon_dotprod = 6 };
constexpr int kIsaCount = 7;

// A unit query quantised for the int8 scan: q ~ sq * (hi + lo / 254), hi and lo integers in
// [-127, 127] (two int8 digits, so the query's own rounding error is ~1/254 of one digit's).
// u8 copies are hi + 128 / lo + 128 (the unsigned operand of VNNI's u8 x s8 product). All four
// arrays are padded with zeros (s8) / 128 (u8) to a multiple of 64 values.
struct QuantQuery {
    const std::int8_t* hi;
    const std::int8_t* lo;
    const std::uint8_t* hi_u8;
    const std::uint8_t* lo_u8;
    float sq;
    std::int32_t hi_sum = 0;  // sum of the hi digits (the packed batch kernel's u8 offset correction)
    bool two_digits = true;   // false: every lo digit is 0 (lo arrays all 0 / 128), so a kernel may skip them
};

// Scratch of the packed batch int8 kernel: a row block re-laid out for VNNI with the query as the
// broadcast operand (groups of 16 rows, 4 bytes per row per step, bytes as x + 128). Reused while
// src/n stay the same (one row block serves many query tiles); owned by the calling thread.
struct I8Pack {
    const std::int8_t* src = nullptr;
    std::size_t n = 0;
    std::vector<std::uint8_t> buf;
};

// Similarity kernels. All pointers are to float32 rows of length d, rows contiguous (stride d).
struct Kernels {
    Isa isa;
    const char* name;
    // out[i] = <q, base[i]> for i in [0, n).
    void (*dot_rows)(const float* q, const float* base, std::size_t n, std::size_t d, float* out);
    // out[j * ldo + i] = <Q[j], base[i]> for j in [0, nq), i in [0, n). Register-blocks queries
    // so each base row is read once per group of queries (the batch path).
    void (*dot_block)(const float* Q, std::size_t nq, const float* base, std::size_t n, std::size_t d,
                      float* out, std::size_t ldo);
    // Approximate similarities over a compact copy (precision.hpp): out[i] ~ <q, dequant(base[i])>,
    // q float32 (not rounded) for bf16/f16. int8: the integer sums H = sum_j hi[j] x[j] and
    // L = sum_j lo[j] x[j] are exact on every ISA (VNNI uses the u8 copies and subtracts
    // 128 * rowsum[i]); out[i] = scale[i] * sq * (float(H) + float(L) / 254).
    void (*dot_rows_bf16)(const float* q, const std::uint16_t* base, std::size_t n, std::size_t d, float* out);
    void (*dot_rows_f16)(const float* q, const std::uint16_t* base, std::size_t n, std::size_t d, float* out);
    void (*dot_rows_i8)(const QuantQuery& q, const std::int8_t* base, const float* scale, const std::int32_t* rowsum,
                        std::size_t n, std::size_t d, float* out);
    // Batch form of dot_rows_i8 for nq one-digit queries (lo == 0 for every query, so only hi counts):
    // out[j * ldo + i] equals dot_rows_i8(qs[j], ...)[i] bit for bit.
    // pack: scratch a kernel may use to re-lay out base once for all the tiles of queries that share it.
    void (*dot_block_i8)(const QuantQuery* qs, std::size_t nq, const std::int8_t* base, const float* scale,
                         const std::int32_t* rowsum, std::size_t n, std::size_t d, float* out, std::size_t ldo,
                         I8Pack* pack);
    // Candidate prefilter of the compact scans: writes, in increasing order, every i in [0, n) with
    // a[i] + e[i] >= T, e[i] = err[i] + eq * (1 + err[i]) (row i's error bound), and returns how many.
    // Callers re-test each returned row with the exact scalar formula, so a kernel may return extra
    // rows but must never drop one: SIMD versions compare against T minus a margin (select_margin)
    // that absorbs any difference from FMA contraction or evaluation order. idx must have room for
    // n + 16 entries (vector stores may write past the count).
    std::size_t (*select_ub)(const float* a, const float* err, float eq, float T, std::size_t n, std::uint32_t* idx);
    // out[i] = <q, rows[i]> for i in [0, n), rows scattered (the compact scans' float32 re-rank):
    // bit for bit dot_rows on each row; several rows summed side by side hide the FMA latency.
    void (*dot_ptrs)(const float* q, const float* const* rows, std::size_t n, std::size_t d, float* out);
    // The batch path's one-digit query range [-m, m] (m <= 127): 64 where dot_block_i8 is fastest so
    // (AVX2's vpmaddubsw of u8 rows x + 128 and s8 digits saturates int16 only past |digit| 64).
    int i8_batch_hi_max;
};

// Threshold used by the select_ub kernels: far below T by many ulps of any value in play (|a|, e <= ~4),
// far above T by nothing that matters (a few extra rows re-tested exactly).
inline float select_margin_threshold(float T) { return T - (1e-5f + 1e-5f * (T < 0 ? -T : T)); }

const Kernels& kernels();                       // the active set
const Kernels& kernels_for(Isa isa);            // a specific set (throws if unsupported)
Isa active_isa();
void set_isa(const std::string& name);          // throws std::invalid_argument
std::vector<std::string> available_isas();      // supported by this CPU (and compiled in)
const char* isa_name(Isa isa);

// Per-ISA kernel entry points (cpp/src/simd/*.cpp; cpp/src/scalar.cpp for scalar).
void dot_rows_f32_scalar(const float*, const float*, std::size_t, std::size_t, float*);
void dot_block_f32_scalar(const float*, std::size_t, const float*, std::size_t, std::size_t, float*, std::size_t);
void dot_rows_bf16_scalar(const float*, const std::uint16_t*, std::size_t, std::size_t, float*);
void dot_rows_f16_scalar(const float*, const std::uint16_t*, std::size_t, std::size_t, float*);
void dot_rows_i8_scalar(const QuantQuery&, const std::int8_t*, const float*, const std::int32_t*, std::size_t, std::size_t, float*);
void dot_rows_bf16_avx2(const float*, const std::uint16_t*, std::size_t, std::size_t, float*);
void dot_rows_f16_avx2(const float*, const std::uint16_t*, std::size_t, std::size_t, float*);
void dot_rows_i8_avx2(const QuantQuery&, const std::int8_t*, const float*, const std::int32_t*, std::size_t, std::size_t, float*);
void dot_block_i8_avx2(const QuantQuery*, std::size_t, const std::int8_t*, const float*, const std::int32_t*,
                       std::size_t, std::size_t, float*, std::size_t, I8Pack*);
void dot_rows_bf16_avx512(const float*, const std::uint16_t*, std::size_t, std::size_t, float*);
void dot_rows_f16_avx512(const float*, const std::uint16_t*, std::size_t, std::size_t, float*);
void dot_rows_i8_avx512_vnni(const QuantQuery&, const std::int8_t*, const float*, const std::int32_t*, std::size_t,
                             std::size_t, float*);
void dot_block_i8_avx512_vnni(const QuantQuery*, std::size_t, const std::int8_t*, const float*, const std::int32_t*,
                              std::size_t, std::size_t, float*, std::size_t, I8Pack*);
std::size_t select_ub_scalar(const float*, const float*, float, float, std::size_t, std::uint32_t*);
std::size_t select_ub_avx2(const float*, const float*, float, float, std::size_t, std::uint32_t*);
std::size_t select_ub_avx512(const float*, const float*, float, float, std::size_t, std::uint32_t*);
void dot_rows_i8_avx2_vnni(const QuantQuery&, const std::int8_t*, const float*, const std::int32_t*, std::size_t,
                           std::size_t, float*);
void dot_rows_f32_avx2(const float*, const float*, std::size_t, std::size_t, float*);
void dot_ptrs_f32_avx2(const float*, const float* const*, std::size_t, std::size_t, float*);
void dot_block_f32_avx2(const float*, std::size_t, const float*, std::size_t, std::size_t, float*, std::size_t);
void dot_rows_f32_avx512(const float*, const float*, std::size_t, std::size_t, float*);
void dot_ptrs_f32_avx512(const float*, const float* const*, std::size_t, std::size_t, float*);
void dot_block_f32_avx512(const float*, std::size_t, const float*, std::size_t, std::size_t, float*, std::size_t);
// AArch64 (cpp/src/simd/dot_neon.cpp; the sdot kernel in dot_neon_dotprod.cpp).
void dot_rows_f32_neon(const float*, const float*, std::size_t, std::size_t, float*);
void dot_block_f32_neon(const float*, std::size_t, const float*, std::size_t, std::size_t, float*, std::size_t);
void dot_rows_bf16_neon(const float*, const std::uint16_t*, std::size_t, std::size_t, float*);
void dot_rows_f16_neon(const float*, const std::uint16_t*, std::size_t, std::size_t, float*);
void dot_rows_i8_neon(const QuantQuery&, const std::int8_t*, const float*, const std::int32_t*, std::size_t, std::size_t, float*);
void dot_rows_i8_neon_dotprod(const QuantQuery&, const std::int8_t*, const float*, const std::int32_t*, std::size_t,
                              std::size_t, float*);
std::size_t select_ub_neon(const float*, const float*, float, float, std::size_t, std::uint32_t*);

}  // namespace knnroute
