// C++ tests of the core's kernels and search, at every ISA level this CPU supports, against the
// scalar reference. No framework: prints each failure, then "N passed, M failed"; exits 1 on any
// failure. Built with -DKNNROUTE_BUILD_TESTS=ON (no Python needed); `.ci/cross.sh` runs it natively on
// x86-64 (g++ and clang) and for aarch64 under qemu-user (with and without dotprod).
//
// Checks, per level: float32 / bf16 / f16 / int8 row kernels against scalar (odd dimensions, 1 to 9
// rows), the batch kernels bit for bit against the same level's row kernels, NaN and inf rows, the
// candidate prefilter (never drops a row scalar keeps, indices increasing), and the search through
// SupportSet in every precision: the same indices and similarities as the float32 search at that level
// (the exact re-rank), ties to the lower index, batch equal to single query.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "knnroute/isa.hpp"
#include "knnroute/precision.hpp"
#include "knnroute/search.hpp"

using namespace knnroute;

namespace {

int g_pass = 0, g_fail = 0;

void check(bool ok, const std::string& what) {
    if (ok) {
        ++g_pass;
    } else {
        ++g_fail;
        std::printf("FAIL %s\n", what.c_str());
    }
}

std::string at(const char* isa, const char* what, std::size_t d, std::size_t n) {
    return std::string(isa) + " " + what + " d=" + std::to_string(d) + " n=" + std::to_string(n);
}

std::vector<float> randn(std::mt19937& g, std::size_t count) {
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<float> v(count);
    for (auto& x : v) x = nd(g);
    return v;
}

void normalize(std::vector<float>& X, std::size_t d) {
    for (std::size_t r = 0; r < X.size() / d; ++r) {
        double s = 0;
        for (std::size_t j = 0; j < d; ++j) s += double(X[r * d + j]) * X[r * d + j];
        const float inv = static_cast<float>(1.0 / std::sqrt(s));
        for (std::size_t j = 0; j < d; ++j) X[r * d + j] *= inv;
    }
}

bool close(float a, float b, float tol) {
    if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
    if (std::isinf(a) || std::isinf(b)) return a == b;
    return std::fabs(a - b) <= tol;
}

bool same_bits(const float* a, const float* b, std::size_t n) { return std::memcmp(a, b, n * sizeof(float)) == 0; }

// A query's int8 digits as the search builds them (padded to 64 values: s8 0 / u8 128).
struct Digits {
    std::vector<std::int8_t> s;
    std::vector<std::uint8_t> u;
    QuantQuery q{};
};

Digits make_digits(std::mt19937& g, std::size_t d, bool two, int hi_max = 127) {
    const std::size_t dp = (d + 63) & ~std::size_t{63};
    Digits D;
    D.s.assign(2 * dp, 0);
    D.u.assign(2 * dp, 128);
    std::uniform_int_distribution<int> ud(-127, 127);
    std::int32_t hs = 0;
    for (std::size_t j = 0; j < d; ++j) {
        const int hi = ud(g) * hi_max / 127, lo = two ? ud(g) : 0;
        D.s[j] = static_cast<std::int8_t>(hi);
        D.s[dp + j] = static_cast<std::int8_t>(lo);
        D.u[j] = static_cast<std::uint8_t>(hi + 128);
        D.u[dp + j] = static_cast<std::uint8_t>(lo + 128);
        hs += hi;
    }
    D.q = QuantQuery{D.s.data(), D.s.data() + dp, D.u.data(), D.u.data() + dp, 0.0123f, hs, two};
    return D;
}

const std::size_t kDims[] = {1, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 383, 384, 385};

void test_kernels(const Kernels& K, const Kernels& S, std::mt19937& g) {
    for (const std::size_t d : kDims) {
        for (std::size_t n = 1; n <= 9; ++n) {
            auto q = randn(g, d);
            auto X = randn(g, n * d);
            normalize(q, d);
            normalize(X, d);
            const float tol = 1e-5f * (1.f + std::sqrt(float(d)));
            std::vector<float> a(n), b(n);
            // float32
            K.dot_rows(q.data(), X.data(), n, d, a.data());
            S.dot_rows(q.data(), X.data(), n, d, b.data());
            bool ok = true;
            for (std::size_t i = 0; i < n; ++i) ok &= close(a[i], b[i], tol);
            check(ok, at(K.name, "dot_rows f32", d, n));
            // batch f32: bit for bit the row kernel of the same level
            for (std::size_t nq = 1; nq <= 5; ++nq) {
                auto Q = randn(g, nq * d);
                std::vector<float> blk(nq * (n + 3), -7.f), row(n);
                K.dot_block(Q.data(), nq, X.data(), n, d, blk.data(), n + 3);
                bool bit = true;
                for (std::size_t j = 0; j < nq; ++j) {
                    K.dot_rows(Q.data() + j * d, X.data(), n, d, row.data());
                    bit &= same_bits(row.data(), blk.data() + j * (n + 3), n);
                }
                check(bit, at(K.name, ("dot_block f32 == dot_rows, nq=" + std::to_string(nq)).c_str(), d, n));
            }
            // scattered rows (the re-rank): bit for bit the row kernel, rows in any order and repeated
            {
                std::vector<const float*> rows(n + 2);
                for (std::size_t i = 0; i < n + 2; ++i) rows[i] = X.data() + ((i * 5 + 3) % n) * d;
                std::vector<float> ptr(n + 2), one(1);
                K.dot_ptrs(q.data(), rows.data(), n + 2, d, ptr.data());
                bool bit = true;
                for (std::size_t i = 0; i < n + 2; ++i) {
                    K.dot_rows(q.data(), rows[i], 1, d, one.data());
                    bit &= same_bits(one.data(), ptr.data() + i, 1);
                }
                check(bit, at(K.name, "dot_ptrs f32 == dot_rows", d, n));
            }
            // bf16 / f16
            std::vector<std::uint16_t> hb(n * d), hf(n * d);
            for (std::size_t t = 0; t < n * d; ++t) {
                hb[t] = f32_to_bf16(X[t]);
                hf[t] = f32_to_f16(X[t]);
            }
            K.dot_rows_bf16(q.data(), hb.data(), n, d, a.data());
            S.dot_rows_bf16(q.data(), hb.data(), n, d, b.data());
            ok = true;
            for (std::size_t i = 0; i < n; ++i) ok &= close(a[i], b[i], tol);
            check(ok, at(K.name, "dot_rows_bf16", d, n));
            K.dot_rows_f16(q.data(), hf.data(), n, d, a.data());
            S.dot_rows_f16(q.data(), hf.data(), n, d, b.data());
            ok = true;
            for (std::size_t i = 0; i < n; ++i) ok &= close(a[i], b[i], tol);
            check(ok, at(K.name, "dot_rows_f16", d, n));
            // int8: the integer sums are exact, so only the final float formula may differ (1 ulp or so)
            std::vector<std::int8_t> X8(n * d);
            std::vector<float> sc(n);
            std::vector<std::int32_t> rs(n);
            std::uniform_int_distribution<int> ud(-127, 127);
            for (std::size_t i = 0; i < n; ++i) {
                std::int32_t s = 0;
                for (std::size_t j = 0; j < d; ++j) {
                    X8[i * d + j] = static_cast<std::int8_t>(i == 0 && j == 0 ? -127 : ud(g));
                    s += X8[i * d + j];
                }
                rs[i] = s;
                sc[i] = 0.5f + 0.01f * float(i);
            }
            for (const bool two : {true, false}) {
                Digits D = make_digits(g, d, two);
                K.dot_rows_i8(D.q, X8.data(), sc.data(), rs.data(), n, d, a.data());
                S.dot_rows_i8(D.q, X8.data(), sc.data(), rs.data(), n, d, b.data());
                ok = true;
                for (std::size_t i = 0; i < n; ++i) ok &= close(a[i], b[i], 1e-6f * (1.f + std::fabs(b[i])));
                check(ok, at(K.name, two ? "dot_rows_i8 two digits" : "dot_rows_i8 one digit", d, n));
            }
            // batch int8 (one-digit queries): bit for bit the row kernel, with and without the pack scratch
            // (digits within +-64, the batch range on AVX2, or +-127, or mixed: 64 but one query)
            for (const std::size_t nq : {1, 4, 9, 14})
            for (const int mode : {127, 64, 0}) {
                std::vector<Digits> Ds;
                for (std::size_t j = 0; j < nq; ++j)
                    Ds.push_back(make_digits(g, d, false, mode == 127 || (mode == 0 && j == nq / 2) ? 127 : 64));
                std::vector<QuantQuery> qs;
                for (auto& D : Ds) qs.push_back(D.q);
                for (const bool packed : {false, true}) {
                    I8Pack pack;
                    std::vector<float> blk(nq * n), row(n);
                    K.dot_block_i8(qs.data(), nq, X8.data(), sc.data(), rs.data(), n, d, blk.data(), n,
                                   packed ? &pack : nullptr);
                    bool bit = true;
                    for (std::size_t j = 0; j < nq; ++j) {
                        K.dot_rows_i8(qs[j], X8.data(), sc.data(), rs.data(), n, d, row.data());
                        bit &= same_bits(row.data(), blk.data() + j * n, n);
                    }
                    check(bit, at(K.name, packed ? "dot_block_i8 packed == rows" : "dot_block_i8 == rows", d, n));
                }
            }
        }
    }
    // NaN / inf rows (kernels see them; the search rejects them at the door): NaN stays NaN, inf
    // stays the same signed inf as in scalar.
    for (const std::size_t d : {5, 16, 37, 384}) {
        auto q = randn(g, d);
        for (auto& v : q) v = std::fabs(v) + 0.1f;  // positive, so +inf x q = +inf with no inf - inf
        auto X = randn(g, 3 * d);
        X[1 * d + d / 2] = std::numeric_limits<float>::quiet_NaN();
        X[2 * d + d - 1] = std::numeric_limits<float>::infinity();
        std::vector<float> a(3), b(3);
        K.dot_rows(q.data(), X.data(), 3, d, a.data());
        S.dot_rows(q.data(), X.data(), 3, d, b.data());
        check(std::isfinite(a[0]) && std::isnan(a[1]) && std::isinf(a[2]) && a[2] > 0 && std::isnan(b[1]) &&
                  b[2] == a[2],
              at(K.name, "NaN/inf rows f32", d, 3));
        std::vector<std::uint16_t> hb(3 * d), hf(3 * d);
        for (std::size_t t = 0; t < 3 * d; ++t) {
            hb[t] = f32_to_bf16(X[t]);
            hf[t] = f32_to_f16(X[t]);
        }
        K.dot_rows_bf16(q.data(), hb.data(), 3, d, a.data());
        check(std::isfinite(a[0]) && std::isnan(a[1]) && std::isinf(a[2]) && a[2] > 0, at(K.name, "NaN/inf rows bf16", d, 3));
        K.dot_rows_f16(q.data(), hf.data(), 3, d, a.data());
        check(std::isfinite(a[0]) && std::isnan(a[1]) && std::isinf(a[2]) && a[2] > 0, at(K.name, "NaN/inf rows f16", d, 3));
    }
    // candidate prefilter: a superset of scalar's rows, increasing, all in range
    for (const std::size_t n : {1, 7, 16, 33, 1000}) {
        auto a = randn(g, n), e = randn(g, n);
        for (auto& v : e) v = std::fabs(v) * 1e-3f;
        for (const float T : {-10.f, 0.f, 0.5f, 1.5f, 10.f}) {
            std::vector<std::uint32_t> ik(n + 16), is(n + 16);
            const std::size_t nk = K.select_ub(a.data(), e.data(), 1e-3f, T, n, ik.data());
            const std::size_t ns = S.select_ub(a.data(), e.data(), 1e-3f, T, n, is.data());
            bool ok = nk <= n;
            for (std::size_t t = 1; ok && t < nk; ++t) ok = ik[t - 1] < ik[t];
            std::size_t p = 0;
            for (std::size_t t = 0; ok && t < ns; ++t) {
                while (p < nk && ik[p] < is[t]) ++p;
                ok = p < nk && ik[p] == is[t];
            }
            check(ok, at(K.name, ("select_ub T=" + std::to_string(T)).c_str(), 0, n));
        }
    }
}

void test_search(const char* isa, std::mt19937& g) {
    set_isa(isa);
    for (const std::size_t d : {3, 17, 64, 385}) {
        const std::size_t n = 3000, B = 5, k = 50;
        auto X = randn(g, n * d);
        // exact duplicates: ties must go to the lower index in every precision
        for (std::size_t j = 0; j < d; ++j) X[(n - 1) * d + j] = X[(n - 2) * d + j] = X[10 * d + j];
        auto Q = randn(g, B * d);
        for (std::size_t j = 0; j < d; ++j) Q[j] = X[10 * d + j];  // query 0 sits on the tied rows
        const SupportSet ref(X.data(), n, d);
        std::vector<std::int64_t> ri(B * k), ii(B * k);
        std::vector<float> rsim(B * k), is(B * k);
        ref.search(Q.data(), B, k, ri.data(), rsim.data(), 1);
        check(ri[0] == 10 && ri[1] == std::int64_t(n - 2) && ri[2] == std::int64_t(n - 1) && rsim[0] == rsim[1] &&
                  rsim[1] == rsim[2],
              at(isa, "search ties to the lower index", d, n));
        for (const char* p : {"f32", "bf16", "f16", "int8"}) {
            const SupportSet s(X.data(), n, d, parse_precision(p), 1);
            s.search(Q.data(), B, k, ii.data(), is.data(), 1);
            check(ii == ri && same_bits(is.data(), rsim.data(), B * k),
                  at(isa, (std::string("search ") + p + " == f32 (exact re-rank), batch").c_str(), d, n));
            std::vector<float> scratch;
            bool ok = true;
            for (std::size_t b = 0; b < B; ++b) {
                std::vector<float> qn(d);
                normalize_rows(Q.data() + b * d, 1, d, qn.data());
                s.search_one_normalized(qn.data(), k, ii.data(), is.data(), scratch);
                ok &= std::equal(ii.begin(), ii.begin() + k, ri.begin() + b * k) &&
                      same_bits(is.data(), rsim.data() + b * k, k);
            }
            check(ok, at(isa, (std::string("search_one ") + p + " == f32 batch").c_str(), d, n));
        }
    }
}

}  // namespace

int main() {
    std::mt19937 g(20261206);
    const Kernels& S = kernels_for(Isa::scalar);
    std::string levels;
    for (const std::string& name : available_isas()) {
        levels += " " + name;
        set_isa(name);
        test_kernels(kernels(), S, g);
        test_search(name.c_str(), g);
    }
    std::printf("levels:%s\n%d passed, %d failed\n", levels.c_str(), g_pass, g_fail);
    return g_fail == 0 ? 0 : 1;
}
