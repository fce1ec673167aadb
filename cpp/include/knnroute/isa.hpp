// Instruction-set dispatch for the similarity kernels.
//
// The kernel set is chosen once, on first use: from $KNNROUTE_ISA if set ("scalar", "avx2",
// "avx512"; asking for an ISA the CPU lacks is an error), otherwise the widest ISA the CPU supports.
// `set_isa` switches it later (a test hook; not meant for concurrent use with running searches).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace knnroute {

enum class Isa { scalar = 0, avx2 = 1, avx512 = 2 };

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
    // q float32 (not rounded). int8: out[i] = scale[i] * sum_j q[j] * base[i][j].
    void (*dot_rows_bf16)(const float* q, const std::uint16_t* base, std::size_t n, std::size_t d, float* out);
    void (*dot_rows_f16)(const float* q, const std::uint16_t* base, std::size_t n, std::size_t d, float* out);
    void (*dot_rows_i8)(const float* q, const std::int8_t* base, const float* scale, std::size_t n, std::size_t d,
                        float* out);
};

const Kernels& kernels();                       // the active set
const Kernels& kernels_for(Isa isa);            // a specific set (throws if unsupported)
Isa active_isa();
void set_isa(const std::string& name);          // throws std::invalid_argument
std::vector<std::string> available_isas();      // supported by this CPU (and compiled in)
const char* isa_name(Isa isa);

// Per-ISA kernel entry points (cpp/src/simd/*.cpp and cpp/src/isa.cpp for scalar).
void dot_rows_f32_scalar(const float*, const float*, std::size_t, std::size_t, float*);
void dot_block_f32_scalar(const float*, std::size_t, const float*, std::size_t, std::size_t, float*, std::size_t);
void dot_rows_bf16_scalar(const float*, const std::uint16_t*, std::size_t, std::size_t, float*);
void dot_rows_f16_scalar(const float*, const std::uint16_t*, std::size_t, std::size_t, float*);
void dot_rows_i8_scalar(const float*, const std::int8_t*, const float*, std::size_t, std::size_t, float*);
void dot_rows_bf16_avx2(const float*, const std::uint16_t*, std::size_t, std::size_t, float*);
void dot_rows_f16_avx2(const float*, const std::uint16_t*, std::size_t, std::size_t, float*);
void dot_rows_i8_avx2(const float*, const std::int8_t*, const float*, std::size_t, std::size_t, float*);
void dot_rows_bf16_avx512(const float*, const std::uint16_t*, std::size_t, std::size_t, float*);
void dot_rows_f16_avx512(const float*, const std::uint16_t*, std::size_t, std::size_t, float*);
void dot_rows_i8_avx512(const float*, const std::int8_t*, const float*, std::size_t, std::size_t, float*);
void dot_rows_f32_avx2(const float*, const float*, std::size_t, std::size_t, float*);
void dot_block_f32_avx2(const float*, std::size_t, const float*, std::size_t, std::size_t, float*, std::size_t);
void dot_rows_f32_avx512(const float*, const float*, std::size_t, std::size_t, float*);
void dot_block_f32_avx512(const float*, std::size_t, const float*, std::size_t, std::size_t, float*, std::size_t);

}  // namespace knnroute
