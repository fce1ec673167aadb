// ISA detection and the run-time kernel choice: one kernel table per level (isa.hpp). The kernels
// themselves are in scalar.cpp and simd/*.cpp. Levels of the other architecture stay in the table (so
// their names parse and say "not supported") with null kernels that are never reachable.
#include "knnroute/isa.hpp"

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <stdexcept>

#if defined(__x86_64__)
#include <cpuid.h>
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#elif defined(__aarch64__) && defined(__APPLE__)
#include <sys/sysctl.h>
#endif

#if defined(__x86_64__)
#define KNNROUTE_X86(f) f
#else
#define KNNROUTE_X86(f) nullptr
#endif
#if defined(__aarch64__)
#define KNNROUTE_ARM(f) f
#else
#define KNNROUTE_ARM(f) nullptr
#endif

namespace knnroute {

namespace {

#if defined(__x86_64__)
// CPUID bits that __builtin_cpu_supports does not name on every compiler (clang 14 knows no "f16c";
// GCC 12 and clang 14 no "avxvnni"). F16C: leaf 1, ECX bit 29. AVX-VNNI (the VEX-encoded 256-bit
// vpdpbusd): leaf 7 sub-leaf 1, EAX bit 4. The OS saves ymm state whenever "avx2" is reported usable,
// and both are only consulted together with it.
bool cpu_has_f16c() {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid(1, &a, &b, &c, &d) && ((c >> 29) & 1u);
}
bool cpu_has_avxvnni() {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid_count(7, 1, &a, &b, &c, &d) && ((a >> 4) & 1u);
}
#endif

#if defined(__aarch64__)
bool cpu_has_dotprod() {
#if defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__APPLE__)
    int v = 0;
    std::size_t len = sizeof(v);
    if (sysctlbyname("hw.optional.arm.FEAT_DotProd", &v, &len, nullptr, 0) == 0) return v != 0;
    len = sizeof(v);
    if (sysctlbyname("hw.optional.armv8_2_dotprod", &v, &len, nullptr, 0) == 0) return v != 0;
    return false;
#else
    return false;
#endif
}
#endif

bool cpu_has(Isa isa) {
    switch (isa) {
        case Isa::scalar: return true;
#if defined(__x86_64__)
        case Isa::avx2:
            return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
        case Isa::avx2_vnni: return cpu_has(Isa::avx2) && cpu_has_avxvnni();
        case Isa::avx512:
            return cpu_has(Isa::avx2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && cpu_has_f16c();
        case Isa::avx512_vnni: return cpu_has(Isa::avx512) && __builtin_cpu_supports("avx512vnni");
#endif
#if defined(__aarch64__)
        case Isa::neon: return true;  // Advanced SIMD (with half-precision conversion) is baseline AArch64
        case Isa::neon_dotprod: return cpu_has_dotprod();
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

// The scattered-row f32 kernel without a dedicated version: the ISA's own row kernel per row.
template <void (*Rows)(const float*, const float*, std::size_t, std::size_t, float*)>
void dot_ptrs_rows(const float* q, const float* const* rows, std::size_t n, std::size_t d, float* out) {
    for (std::size_t i = 0; i < n; ++i) Rows(q, rows[i], 1, d, out + i);
}

const Kernels kTable[] = {
    {Isa::scalar, "scalar", dot_rows_f32_scalar, dot_block_f32_scalar, dot_rows_bf16_scalar, dot_rows_f16_scalar,
     dot_rows_i8_scalar, dot_block_i8_rows<dot_rows_i8_scalar>, select_ub_scalar,
     dot_ptrs_rows<dot_rows_f32_scalar>, 127},
    {Isa::avx2, "avx2", KNNROUTE_X86(dot_rows_f32_avx2), KNNROUTE_X86(dot_block_f32_avx2),
     KNNROUTE_X86(dot_rows_bf16_avx2), KNNROUTE_X86(dot_rows_f16_avx2), KNNROUTE_X86(dot_rows_i8_avx2),
     KNNROUTE_X86(dot_block_i8_avx2), KNNROUTE_X86(select_ub_avx2), KNNROUTE_X86(dot_ptrs_f32_avx2), 64},
    {Isa::avx2_vnni, "avx2-vnni", KNNROUTE_X86(dot_rows_f32_avx2), KNNROUTE_X86(dot_block_f32_avx2),
     KNNROUTE_X86(dot_rows_bf16_avx2), KNNROUTE_X86(dot_rows_f16_avx2), KNNROUTE_X86(dot_rows_i8_avx2_vnni),
     KNNROUTE_X86(dot_block_i8_rows<dot_rows_i8_avx2_vnni>), KNNROUTE_X86(select_ub_avx2),
     KNNROUTE_X86(dot_ptrs_rows<dot_rows_f32_avx2>), 127},
    {Isa::avx512, "avx512", KNNROUTE_X86(dot_rows_f32_avx512), KNNROUTE_X86(dot_block_f32_avx512),
     KNNROUTE_X86(dot_rows_bf16_avx512), KNNROUTE_X86(dot_rows_f16_avx512), KNNROUTE_X86(dot_rows_i8_avx2),
     KNNROUTE_X86(dot_block_i8_avx2), KNNROUTE_X86(select_ub_avx512), KNNROUTE_X86(dot_ptrs_f32_avx512), 64},
    {Isa::avx512_vnni, "avx512-vnni", KNNROUTE_X86(dot_rows_f32_avx512), KNNROUTE_X86(dot_block_f32_avx512),
     KNNROUTE_X86(dot_rows_bf16_avx512), KNNROUTE_X86(dot_rows_f16_avx512), KNNROUTE_X86(dot_rows_i8_avx512_vnni),
     KNNROUTE_X86(dot_block_i8_avx512_vnni), KNNROUTE_X86(select_ub_avx512),
     KNNROUTE_X86(dot_ptrs_f32_avx512), 127},
    {Isa::neon, "neon", KNNROUTE_ARM(dot_rows_f32_neon), KNNROUTE_ARM(dot_block_f32_neon),
     KNNROUTE_ARM(dot_rows_bf16_neon), KNNROUTE_ARM(dot_rows_f16_neon), KNNROUTE_ARM(dot_rows_i8_neon),
     KNNROUTE_ARM(dot_block_i8_rows<dot_rows_i8_neon>), KNNROUTE_ARM(select_ub_neon),
     KNNROUTE_ARM(dot_ptrs_rows<dot_rows_f32_neon>), 127},
    {Isa::neon_dotprod, "neon-dotprod", KNNROUTE_ARM(dot_rows_f32_neon), KNNROUTE_ARM(dot_block_f32_neon),
     KNNROUTE_ARM(dot_rows_bf16_neon), KNNROUTE_ARM(dot_rows_f16_neon), KNNROUTE_ARM(dot_rows_i8_neon_dotprod),
     KNNROUTE_ARM(dot_block_i8_rows<dot_rows_i8_neon_dotprod>), KNNROUTE_ARM(select_ub_neon),
     KNNROUTE_ARM(dot_ptrs_rows<dot_rows_f32_neon>), 127},
};
// kTable[i].isa == Isa(i): parse_isa, isa_name and kernels_for index it by the enum.
static_assert(sizeof(kTable) / sizeof(kTable[0]) == static_cast<std::size_t>(kIsaCount));

Isa parse_isa(const std::string& name) {
    for (const auto& k : kTable)
        if (name == k.name) return k.isa;
    throw std::invalid_argument("unknown ISA '" + name +
                                "': use one of scalar, avx2, avx2-vnni, avx512, avx512-vnni, neon, neon-dotprod");
}

// The widest supported level: the last supported entry of the table (narrowest first per architecture).
Isa best_isa() {
    Isa best = Isa::scalar;
    for (const auto& k : kTable)
        if (cpu_has(k.isa)) best = k.isa;
    return best;
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
