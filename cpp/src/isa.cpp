// ISA detection and the run-time kernel choice: one kernel table per level (isa.hpp). The kernels
// themselves are in scalar.cpp and simd/*.cpp.
#include "knnroute/isa.hpp"

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <stdexcept>

namespace knnroute {

namespace {

bool cpu_has(Isa isa) {
    switch (isa) {
        case Isa::scalar: return true;
#if defined(__x86_64__) || defined(__i386__)
        case Isa::avx2:
            return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
        case Isa::avx512:
            return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                   __builtin_cpu_supports("f16c");
        case Isa::avx512_vnni: return cpu_has(Isa::avx512) && __builtin_cpu_supports("avx512vnni");
#endif
        default: return false;
    }
}

// Batch int8 over one-digit queries without a dedicated kernel: the ISA's own row kernel per query
// (bit-identical by construction).
template <void (*Rows)(const QuantQuery&, const std::int8_t*, const float*, const std::int32_t*, std::size_t,
                       std::size_t, float*)>
void dot_block_i8_rows(const QuantQuery* qs, std::size_t nq, const std::int8_t* base, const float* scale,
                       const std::int32_t* rowsum, std::size_t n, std::size_t d, float* out, std::size_t ldo,
                       I8Pack*) {
    for (std::size_t j = 0; j < nq; ++j) Rows(qs[j], base, scale, rowsum, n, d, out + j * ldo);
}

const Kernels kTable[] = {
    {Isa::scalar, "scalar", dot_rows_f32_scalar, dot_block_f32_scalar, dot_rows_bf16_scalar, dot_rows_f16_scalar,
     dot_rows_i8_scalar, dot_block_i8_rows<dot_rows_i8_scalar>, select_ub_scalar},
    {Isa::avx2, "avx2", dot_rows_f32_avx2, dot_block_f32_avx2, dot_rows_bf16_avx2, dot_rows_f16_avx2, dot_rows_i8_avx2,
     dot_block_i8_rows<dot_rows_i8_avx2>, select_ub_avx2},
    {Isa::avx512, "avx512", dot_rows_f32_avx512, dot_block_f32_avx512, dot_rows_bf16_avx512, dot_rows_f16_avx512,
     dot_rows_i8_avx512, dot_block_i8_rows<dot_rows_i8_avx512>, select_ub_avx512},
    {Isa::avx512_vnni, "avx512-vnni", dot_rows_f32_avx512, dot_block_f32_avx512, dot_rows_bf16_avx512,
     dot_rows_f16_avx512, dot_rows_i8_avx512_vnni, dot_block_i8_avx512_vnni, select_ub_avx512},
};
// kTable[i].isa == Isa(i): parse_isa, isa_name and kernels_for index it by the enum.
static_assert(sizeof(kTable) / sizeof(kTable[0]) == static_cast<std::size_t>(Isa::avx512_vnni) + 1);

Isa parse_isa(const std::string& name) {
    if (name == "scalar") return Isa::scalar;
    if (name == "avx2") return Isa::avx2;
    if (name == "avx512") return Isa::avx512;
    if (name == "avx512-vnni") return Isa::avx512_vnni;
    throw std::invalid_argument("unknown ISA '" + name + "': use one of scalar, avx2, avx512, avx512-vnni");
}

Isa best_isa() {
    if (cpu_has(Isa::avx512_vnni)) return Isa::avx512_vnni;
    if (cpu_has(Isa::avx512)) return Isa::avx512;
    if (cpu_has(Isa::avx2)) return Isa::avx2;
    return Isa::scalar;
}

std::atomic<const Kernels*> g_active{nullptr};
std::once_flag g_once;

void init_from_env() {
    Isa isa = best_isa();
    if (const char* env = std::getenv("KNNROUTE_ISA"); env != nullptr && *env != '\0') {
        Isa want = parse_isa(env);
        if (!cpu_has(want))
            throw std::invalid_argument(std::string("KNNROUTE_ISA=") + env +
                                        " is not supported by this CPU; available: see available_isas()");
        isa = want;
    }
    g_active.store(&kTable[static_cast<int>(isa)]);
}

}  // namespace

const char* isa_name(Isa isa) { return kTable[static_cast<int>(isa)].name; }

const Kernels& kernels_for(Isa isa) {
    if (!cpu_has(isa)) throw std::invalid_argument(std::string("ISA ") + isa_name(isa) + " not supported by this CPU");
    return kTable[static_cast<int>(isa)];
}

const Kernels& kernels() {
    const Kernels* k = g_active.load(std::memory_order_acquire);
    if (k != nullptr) return *k;
    std::call_once(g_once, init_from_env);
    return *g_active.load(std::memory_order_acquire);
}

Isa active_isa() { return kernels().isa; }

void set_isa(const std::string& name) {
    kernels();  // honour the env choice first (and surface its error)
    Isa isa = parse_isa(name);
    if (!cpu_has(isa))
        throw std::invalid_argument("ISA '" + name + "' is not supported by this CPU; available: see available_isas()");
    g_active.store(&kTable[static_cast<int>(isa)], std::memory_order_release);
}

std::vector<std::string> available_isas() {
    std::vector<std::string> out;
    for (const auto& k : kTable)
        if (cpu_has(k.isa)) out.emplace_back(k.name);
    return out;
}

}  // namespace knnroute
