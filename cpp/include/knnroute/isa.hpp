// Instruction-set dispatch for the similarity kernels.
//
// The kernel set is chosen once, on first use: from $KNNROUTE_ISA if set ("scalar", "avx2",
// "avx512"; asking for an ISA the CPU lacks is an error), otherwise the widest ISA the CPU supports.
// `set_isa` switches it later (a test hook; not meant for concurrent use with running searches).
#pragma once

#include <cstddef>
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
void dot_rows_f32_avx2(const float*, const float*, std::size_t, std::size_t, float*);
void dot_block_f32_avx2(const float*, std::size_t, const float*, std::size_t, std::size_t, float*, std::size_t);
void dot_rows_f32_avx512(const float*, const float*, std::size_t, std::size_t, float*);
void dot_block_f32_avx512(const float*, std::size_t, const float*, std::size_t, std::size_t, float*, std::size_t);

}  // namespace knnroute
