// Python bindings for the knnroute core: validate -> allocate outputs -> release the GIL -> compute.
//
// Large arrays (embeddings, queries, outcome tables, predictions) must already be C-contiguous with
// the documented dtype: a float64 or strided array raises TypeError instead of being copied behind
// the caller's back (the knnroute Python layer converts once). Small curve inputs (lambdas, curve
// points) are converted to float64 as a convenience.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/typing.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <memory>
#include <sstream>
#include <string>

#include "knnroute/aggregate.hpp"
#include "knnroute/hull.hpp"
#include "knnroute/isa.hpp"
#include "knnroute/lexical.hpp"
#include "knnroute/pool.hpp"
#include "knnroute/precision.hpp"
#include "knnroute/route.hpp"
#include "knnroute/router.hpp"
#include "knnroute/search.hpp"
#include "knnroute/tune.hpp"

namespace py = pybind11;
using namespace knnroute;

namespace {

std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// A C-contiguous array of exactly dtype T with the given ndim (or raise TypeError / ValueError).
template <class T>
py::array_t<T> strict(py::handle obj, const char* name, int ndim) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(name) + " must be a numpy array, got " +
                             py::str(py::type::of(obj)).cast<std::string>() +
                             "; convert with np.ascontiguousarray(x, dtype=np." +
                             (std::is_same<T, float>::value ? "float32" : "float64") + ")");
    py::array a = py::reinterpret_borrow<py::array>(obj);
    const char* want = std::is_same<T, float>::value ? "float32" : (std::is_same<T, double>::value ? "float64" : "int64");
    // Equivalent dtype (PyArray_EquivTypes: same kind, size and byte order), not the identical dtype
    // object: arrays unpickled in another process (multiprocessing, Ray) carry their own float32 dtype.
    if (!py::isinstance<py::array_t<T>>(a))
        throw py::type_error(std::string(name) + " must have dtype " + want + ", got " + dtype_name(a) +
                             "; convert once with np.ascontiguousarray(x, dtype=np." + want + ")");
    if (!(a.flags() & py::array::c_style))
        throw py::type_error(std::string(name) + " must be C-contiguous; convert once with np.ascontiguousarray(x)");
    if (a.ndim() != ndim) {
        std::ostringstream os;
        os << name << " must be " << ndim << "-D, got shape (";
        for (py::ssize_t i = 0; i < a.ndim(); ++i) os << (i ? ", " : "") << a.shape(i);
        os << ")";
        if (ndim == 2 && a.ndim() == 1) os << "; for a single row use x[None, :]";
        throw py::value_error(os.str());
    }
    return py::reinterpret_borrow<py::array_t<T>>(a);
}

// Convenience conversion for small inputs.
py::array_t<double> as_f64_1d(py::handle obj, const char* name) {
    auto a = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(obj);
    if (!a) throw py::type_error(std::string(name) + " must be convertible to a float64 array");
    if (a.ndim() == 0) a = a.reshape(std::vector<py::ssize_t>{1});
    if (a.ndim() != 1) throw py::value_error(std::string(name) + " must be a scalar or 1-D");
    return a;
}

void check_finite_f32(const float* p, std::size_t n, const char* name) {
    for (std::size_t i = 0; i < n; ++i)
        if (!std::isfinite(p[i])) throw py::value_error(std::string(name) + " holds NaN or inf at flat index " + std::to_string(i));
}

Weighting parse_weighting(const std::string& w) {
    if (w == "uniform") return Weighting::uniform;
    if (w == "similarity") return Weighting::similarity;
    if (w == "softmax") return Weighting::softmax;
    throw py::value_error("weighting must be 'uniform', 'similarity' or 'softmax', got '" + w + "'");
}

const char* weighting_name(Weighting w) {
    switch (w) {
        case Weighting::uniform: return "uniform";
        case Weighting::similarity: return "similarity";
        default: return "softmax";
    }
}

std::size_t check_k_arg(long long k) {
    if (k < 1) throw py::value_error("k must be >= 1, got " + std::to_string(k));
    return static_cast<std::size_t>(k);
}

// (indices int64 (B, k), similarities float32 (B, k)); the typed tuple gives the stubs a precise type.
using SearchResult = py::typing::Tuple<py::array_t<std::int64_t>, py::array_t<float>>;

SearchResult search_out(std::size_t B, std::size_t k, py::array_t<std::int64_t>& idx, py::array_t<float>& sim) {
    idx = py::array_t<std::int64_t>({static_cast<py::ssize_t>(B), static_cast<py::ssize_t>(k)});
    sim = py::array_t<float>({static_cast<py::ssize_t>(B), static_cast<py::ssize_t>(k)});
    return SearchResult(py::make_tuple(idx, sim));
}

void check_dim(py::ssize_t got, std::size_t want, const char* name) {
    if (static_cast<std::size_t>(got) != want)
        throw py::value_error(std::string(name) + " has dimension " + std::to_string(got) + " but the support set has " +
                              std::to_string(want) + "; embed with the same model as the support set");
}

AggregateParams make_params(const std::string& weighting, double temperature, double shrinkage) {
    AggregateParams p;
    p.weighting = parse_weighting(weighting);
    if (p.weighting == Weighting::softmax && !(temperature > 0.0))
        throw py::value_error("temperature must be > 0 for softmax weighting");
    if (!(shrinkage >= 0.0) || std::isinf(shrinkage)) throw py::value_error("shrinkage must be finite and >= 0");
    p.temperature = static_cast<float>(temperature);
    p.shrinkage = static_cast<float>(shrinkage);
    return p;
}

// A LexicalIndex with the arrays it borrows kept alive.
struct PyLexicalIndex {
    py::array_t<float> idf, comp_t;
    std::unique_ptr<LexicalIndex> index;
};

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "knnroute compiled core: exact cosine top-k, aggregation, routing, exact lambda sweep, hull AUC.";

    // pyproject.toml's [project] version, passed by CMakeLists.txt.
    m.attr("__version__") = KNNROUTE_VERSION;

    m.def("isa", []() { return std::string(isa_name(active_isa())); },
          "Name of the active kernel set: 'avx512-vnni', 'avx512' (AVX-512 without VNNI), 'avx2-vnni' (AVX2 with "
          "AVX-VNNI), 'avx2', 'neon-dotprod', 'neon' (AArch64 without dotprod) or 'scalar' (chosen once, the widest "
          "the CPU has; $KNNROUTE_ISA overrides).");
    m.def("available_isas", &available_isas, "Kernel sets this CPU supports, narrowest first.");
    m.def("set_isa", &set_isa, py::arg("name"),
          "Switch the active kernel set (test hook; do not call while searches run on other threads).");

    m.def(
        "topk_cosine",
        [](py::handle queries, py::handle base, long long k, int n_threads) {
            auto Q = strict<float>(queries, "queries", 2);
            auto X = strict<float>(base, "base", 2);
            if (X.shape(0) == 0) throw py::value_error("base is empty: need at least one row");
            if (Q.shape(1) != X.shape(1))
                throw py::value_error("queries have dimension " + std::to_string(Q.shape(1)) + " but base has " +
                                      std::to_string(X.shape(1)));
            const std::size_t kk = check_k_arg(k), B = Q.shape(0), N = X.shape(0), d = X.shape(1);
            if (kk > N) throw py::value_error("k=" + std::to_string(kk) + " exceeds the base size " + std::to_string(N));
            py::array_t<std::int64_t> idx;
            py::array_t<float> sim;
            SearchResult out = search_out(B, kk, idx, sim);
            const float* qp = Q.data();
            const float* xp = X.data();
            std::int64_t* ip = idx.mutable_data();
            float* sp = sim.mutable_data();
            {
                py::gil_scoped_release nogil;
                topk_cosine(qp, B, xp, N, d, kk, ip, sp, n_threads);
            }
            return out;
        },
        py::arg("queries"), py::arg("base"), py::arg("k"), py::arg("n_threads") = 0,
        R"(Exact cosine top-k.

queries: float32 (B, d), base: float32 (N, d), C-contiguous; rows must be finite and non-zero (both are
normalised internally). Returns (indices int64 (B, k), similarities float32 (B, k)), each row by
similarity descending, ties to the lower index. O(B N d).)");

    m.def("precisions", []() { return std::vector<std::string>{"f32", "bf16", "f16", "int8"}; },
          "Storage precisions for the single-query scan (every one returns the f32 result exactly).");
    m.def("pool_threads", &pool_threads, "Threads one query may use (the blocking worker pool + the caller).");
    m.def("last_rerank_count", &last_rerank_count,
          "Rows re-ranked exactly by this thread's last reduced-precision single-query search (diagnostic).");

    py::class_<SupportSet>(m, "SupportSet", "Unit-normalised float32 support rows, stored once, searched exactly.")
        .def(py::init([](py::handle emb, const std::string& precision, int query_threads) {
                 auto X = strict<float>(emb, "embeddings", 2);
                 if (X.shape(0) == 0) throw py::value_error("embeddings are empty: need at least one row");
                 const Precision prec = parse_precision(precision);
                 if (query_threads < 0) throw py::value_error("query_threads must be >= 0 (0: automatic)");
                 const float* p = X.data();
                 std::size_t n = X.shape(0), d = X.shape(1);
                 py::gil_scoped_release nogil;
                 return new SupportSet(p, n, d, prec, query_threads);
             }),
             py::arg("embeddings"), py::arg("precision") = "f32", py::arg("query_threads") = 0,
             "precision: 'f32' | 'bf16' | 'f16' | 'int8' storage for the single-query scan (an exact float32 "
             "re-rank makes every precision return the f32 result); query_threads: threads one query may use "
             "(0: automatic, 1: calling thread only).")
        .def_property_readonly("precision", [](const SupportSet& s) { return std::string(precision_name(s.precision())); })
        .def_property_readonly("memory_bytes", &SupportSet::memory_bytes)
        .def_property("query_threads", &SupportSet::query_threads, &SupportSet::set_query_threads)
        .def("__len__", &SupportSet::size)
        .def_property_readonly("size", &SupportSet::size)
        .def_property_readonly("dim", &SupportSet::dim)
        .def(
            "search",
            [](const SupportSet& s, py::handle queries, long long k, int n_threads) {
                auto Q = strict<float>(queries, "queries", 2);
                check_dim(Q.shape(1), s.dim(), "queries");
                const std::size_t kk = check_k_arg(k), B = Q.shape(0);
                if (kk > s.size())
                    throw py::value_error("k=" + std::to_string(kk) + " exceeds the support size " + std::to_string(s.size()));
                py::array_t<std::int64_t> idx;
                py::array_t<float> sim;
                SearchResult out = search_out(B, kk, idx, sim);
                const float* qp = Q.data();
                std::int64_t* ip = idx.mutable_data();
                float* sp = sim.mutable_data();
                {
                    py::gil_scoped_release nogil;
                    s.search(qp, B, kk, ip, sp, n_threads);
                }
                return out;
            },
            py::arg("queries"), py::arg("k"), py::arg("n_threads") = 0,
            "Exact cosine top-k of queries float32 (B, d): (indices int64 (B, k), similarities float32 (B, k)).")
        .def("embeddings", [](const SupportSet& s) {
            py::array_t<float> out({static_cast<py::ssize_t>(s.size()), static_cast<py::ssize_t>(s.dim())});
            std::copy(s.data(), s.data() + s.size() * s.dim(), out.mutable_data());
            return out;
        }, "Copy of the stored unit rows, float32 (N, d).");

    m.def(
        "aggregate",
        [](py::handle idx_o, py::handle sim_o, py::handle scores_o, py::handle costs_o, const std::string& weighting,
           double temperature, double shrinkage, py::object prior_s_o, py::object prior_c_o) {
            auto idx = strict<std::int64_t>(idx_o, "idx", 2);
            auto sim = strict<float>(sim_o, "sim", 2);
            auto S = strict<float>(scores_o, "scores", 2);
            auto C = strict<float>(costs_o, "costs", 2);
            if (idx.shape(0) != sim.shape(0) || idx.shape(1) != sim.shape(1))
                throw py::value_error("idx and sim must have the same shape");
            if (S.shape(0) != C.shape(0) || S.shape(1) != C.shape(1))
                throw py::value_error("scores and costs must have the same shape (N, M)");
            if (idx.shape(1) == 0) throw py::value_error("need at least one neighbour (k >= 1)");
            const std::size_t B = idx.shape(0), k = idx.shape(1), N = S.shape(0), M = S.shape(1);
            if (M == 0) throw py::value_error("scores/costs have 0 model columns");
            AggregateParams p = make_params(weighting, temperature, shrinkage);
            std::vector<float> ps(M), pc(M);
            if (prior_s_o.is_none()) column_means(S.data(), N, M, ps.data());
            else {
                auto a = strict<float>(prior_s_o, "prior_scores", 1);
                if (static_cast<std::size_t>(a.shape(0)) != M) throw py::value_error("prior_scores must have length M");
                std::copy(a.data(), a.data() + M, ps.begin());
            }
            if (prior_c_o.is_none()) column_means(C.data(), N, M, pc.data());
            else {
                auto a = strict<float>(prior_c_o, "prior_costs", 1);
                if (static_cast<std::size_t>(a.shape(0)) != M) throw py::value_error("prior_costs must have length M");
                std::copy(a.data(), a.data() + M, pc.begin());
            }
            py::array_t<float> sh({static_cast<py::ssize_t>(B), static_cast<py::ssize_t>(M)});
            py::array_t<float> ch({static_cast<py::ssize_t>(B), static_cast<py::ssize_t>(M)});
            const std::int64_t* ip = idx.data();
            const float* sp = sim.data();
            const float* Sp = S.data();
            const float* Cp = C.data();
            float* shp = sh.mutable_data();
            float* chp = ch.mutable_data();
            {
                py::gil_scoped_release nogil;
                aggregate(ip, sp, B, k, Sp, Cp, N, M, ps.data(), pc.data(), p, shp, chp);
            }
            return py::make_tuple(sh, ch);
        },
        py::arg("idx"), py::arg("sim"), py::arg("scores"), py::arg("costs"), py::arg("weighting") = "uniform",
        py::arg("temperature") = 0.05, py::arg("shrinkage") = 0.0, py::arg("prior_scores") = py::none(),
        py::arg("prior_costs") = py::none(),
        R"(Predicted score and cost per model from neighbours.

idx int64 (B, k), sim float32 (B, k); scores, costs float32 (N, M) with NaN = missing.
weighting: 'uniform' (w=1, the paper), 'similarity' (w=max(sim,0)), 'softmax' (w=exp((sim-max)/temperature)).
s_hat = (sum w s + shrinkage * prior) / (sum w + shrinkage) over observed cells; prior defaults to the
column means of observed cells; no observed neighbour and shrinkage 0 -> the prior.
Returns (s_hat float32 (B, M), c_hat float32 (B, M)).)");

    m.def(
        "tune_grid",
        [](py::handle idx_o, py::handle sim_o, py::handle scores_o, const std::vector<py::handle>& cost_os,
           const std::vector<py::object>& add_os, py::handle ts_o, py::handle tc_o, double c_max,
           const std::vector<long long>& ks, const std::vector<std::string>& weightings,
           const std::vector<double>& temperatures, const std::vector<double>& shrinkages) {
            auto idx = strict<std::int64_t>(idx_o, "idx", 2);
            auto sim = strict<float>(sim_o, "sim", 2);
            auto S = strict<float>(scores_o, "scores", 2);
            auto TS = strict<double>(ts_o, "true_scores", 2);
            auto TC = strict<double>(tc_o, "true_costs", 2);
            if (idx.shape(0) != sim.shape(0) || idx.shape(1) != sim.shape(1))
                throw py::value_error("idx and sim must have the same shape");
            const std::size_t B = idx.shape(0), kmax = idx.shape(1), N = S.shape(0), M = S.shape(1);
            if (B == 0 || M == 0 || kmax == 0) throw py::value_error("tune_grid needs queries, neighbours and models");
            for (auto* a : {&TS, &TC})
                if (static_cast<std::size_t>(a->shape(0)) != B || static_cast<std::size_t>(a->shape(1)) != M)
                    throw py::value_error("true_scores and true_costs must be (B, M)");
            for (std::size_t i = 0; i < B * M; ++i)
                if (!std::isfinite(TS.data()[i]) || !std::isfinite(TC.data()[i]))
                    throw py::value_error("true outcomes must be finite: fill missing cells first");
            if (cost_os.empty() || add_os.size() != cost_os.size())
                throw py::value_error("give one add (an array or None) per cost table");
            std::vector<py::array_t<float>> costs;
            std::vector<py::array_t<double>> adds_keep;
            std::vector<const float*> cp;
            std::vector<const double*> ap;
            for (std::size_t c = 0; c < cost_os.size(); ++c) {
                costs.push_back(strict<float>(cost_os[c], "costs", 2));
                if (static_cast<std::size_t>(costs.back().shape(0)) != N || static_cast<std::size_t>(costs.back().shape(1)) != M)
                    throw py::value_error("every cost table must have the shape of scores (N, M)");
                cp.push_back(costs.back().data());
                if (add_os[c].is_none()) ap.push_back(nullptr);
                else {
                    adds_keep.push_back(strict<double>(add_os[c], "add", 2));
                    if (static_cast<std::size_t>(adds_keep.back().shape(0)) != B ||
                        static_cast<std::size_t>(adds_keep.back().shape(1)) != M)
                        throw py::value_error("every add must be (B, M)");
                    ap.push_back(adds_keep.back().data());
                }
            }
            const std::size_t G = ks.size();
            if (weightings.size() != G || temperatures.size() != G || shrinkages.size() != G)
                throw py::value_error("ks, weightings, temperatures and shrinkages must have one length");
            std::vector<GridConfig> cfg(G);
            for (std::size_t g = 0; g < G; ++g) {
                const std::size_t k = check_k_arg(ks[g]);
                if (k > kmax)
                    throw py::value_error("config k=" + std::to_string(k) + " but only " + std::to_string(kmax) +
                                          " neighbours were given");
                cfg[g].k = k;
                cfg[g].params = make_params(weightings[g], temperatures[g], shrinkages[g]);
            }
            py::array_t<double> out({static_cast<py::ssize_t>(cost_os.size()), static_cast<py::ssize_t>(G)});
            double* op = out.mutable_data();
            const std::int64_t* ip = idx.data();
            const float* sp = sim.data();
            const float* Sp = S.data();
            const double* tsp = TS.data();
            const double* tcp = TC.data();
            {
                py::gil_scoped_release nogil;
                tune_grid(ip, sp, B, kmax, Sp, N, M, cp, ap, tsp, tcp, c_max, cfg, op);
            }
            return out;
        },
        py::arg("idx"), py::arg("sim"), py::arg("scores"), py::arg("cost_tables"), py::arg("adds"),
        py::arg("true_scores"), py::arg("true_costs"), py::arg("c_max"), py::arg("ks"), py::arg("weightings"),
        py::arg("temperatures"), py::arg("shrinkages"),
        R"(Tuning AUC of every kNN configuration from one neighbour list (the tuned kNN's grid in one pass).

idx int64 (B, kmax), sim float32 (B, kmax): nearest first. scores float32 (N, M); cost_tables: float32 (N, M)
tables (one per cost model, NaN = missing); adds: per cost table None or float64 (B, M) known cost added to
the predicted cost. true_scores, true_costs float64 (B, M) filled truth; c_max the cost scale. Configuration g
is (ks[g], weightings[g], temperatures[g], shrinkages[g]). Returns float64 (n_cost, G): for each, exactly
hull_auc(sweep(aggregate(idx[:, :k], sim[:, :k], scores, cost, ...), true) with scores x 100, c_max).)");

    m.def(
        "route",
        [](py::handle s_o, py::handle c_o, py::handle lams_o) {
            auto S = strict<float>(s_o, "s_hat", 2);
            auto C = strict<float>(c_o, "c_hat", 2);
            if (S.shape(0) != C.shape(0) || S.shape(1) != C.shape(1))
                throw py::value_error("s_hat and c_hat must have the same shape (B, M)");
            if (S.shape(1) == 0) throw py::value_error("need at least one model column");
            auto L = as_f64_1d(lams_o, "lams");
            const std::size_t B = S.shape(0), M = S.shape(1), nl = L.shape(0);
            for (std::size_t l = 0; l < nl; ++l)
                if (!std::isfinite(L.data()[l])) throw py::value_error("lams must be finite");
            check_finite_f32(S.data(), B * M, "s_hat");
            check_finite_f32(C.data(), B * M, "c_hat");
            py::array_t<std::int64_t> out({static_cast<py::ssize_t>(B), static_cast<py::ssize_t>(nl)});
            const float* sp = S.data();
            const float* cp = C.data();
            const double* lp = L.data();
            std::int64_t* op = out.mutable_data();
            {
                py::gil_scoped_release nogil;
                route(sp, cp, B, M, lp, nl, op);
            }
            return out;
        },
        py::arg("s_hat"), py::arg("c_hat"), py::arg("lams"),
        "argmax_m s_hat - lam * c_hat for every lam: int64 (B, L). Ties: the cheaper model, then the lower index.");

    m.def(
        "envelope",
        [](py::handle s_o, py::handle c_o) {
            auto S = strict<float>(s_o, "s", 1);
            auto C = strict<float>(c_o, "c", 1);
            if (S.shape(0) != C.shape(0) || S.shape(0) == 0) throw py::value_error("s and c must have the same non-zero length");
            check_finite_f32(S.data(), S.shape(0), "s");
            check_finite_f32(C.data(), C.shape(0), "c");
            std::vector<double> lams;
            std::vector<std::int64_t> models;
            envelope(S.data(), C.data(), S.shape(0), lams, models);
            return py::make_tuple(py::array_t<double>(lams.size(), lams.data()),
                                  py::array_t<std::int64_t>(models.size(), models.data()));
        },
        py::arg("s"), py::arg("c"),
        "Upper envelope of s_m - lam c_m over lam >= 0: (lams float64 (J,), models int64 (J,)); lams[0] = 0 and "
        "models[j] wins on [lams[j], lams[j+1]).");

    m.def(
        "sweep",
        [](py::handle s_o, py::handle c_o, py::handle ts_o, py::handle tc_o) {
            auto S = strict<float>(s_o, "s_hat", 2);
            auto C = strict<float>(c_o, "c_hat", 2);
            auto TS = strict<double>(ts_o, "true_scores", 2);
            auto TC = strict<double>(tc_o, "true_costs", 2);
            const std::size_t B = S.shape(0), M = S.shape(1);
            for (auto* a : {&C})
                if (static_cast<std::size_t>(a->shape(0)) != B || static_cast<std::size_t>(a->shape(1)) != M)
                    throw py::value_error("s_hat and c_hat must have the same shape (B, M)");
            if (static_cast<std::size_t>(TS.shape(0)) != B || static_cast<std::size_t>(TS.shape(1)) != M ||
                static_cast<std::size_t>(TC.shape(0)) != B || static_cast<std::size_t>(TC.shape(1)) != M)
                throw py::value_error("true_scores and true_costs must have the shape of s_hat (B, M)");
            if (B == 0 || M == 0) throw py::value_error("sweep needs at least one query and one model");
            check_finite_f32(S.data(), B * M, "s_hat");
            check_finite_f32(C.data(), B * M, "c_hat");
            for (std::size_t i = 0; i < B * M; ++i)
                if (!std::isfinite(TS.data()[i]) || !std::isfinite(TC.data()[i]))
                    throw py::value_error("true outcomes must be finite: fill missing cells first (DESIGN.md: a missing "
                                          "score counts as 0, a missing cost as the model's mean cost)");
            std::vector<double> lams, mc, ms;
            {
                py::gil_scoped_release nogil;
                sweep(S.data(), C.data(), TS.data(), TC.data(), B, M, lams, mc, ms);
            }
            return py::make_tuple(py::array_t<double>(lams.size(), lams.data()), py::array_t<double>(mc.size(), mc.data()),
                                  py::array_t<double>(ms.size(), ms.data()));
        },
        py::arg("s_hat"), py::arg("c_hat"), py::arg("true_scores"), py::arg("true_costs"),
        R"(Exact cost-quality curve over all lam >= 0.

s_hat, c_hat float32 (B, M): predictions; true_scores, true_costs float64 (B, M), finite.
Returns (lams, mean_cost, mean_score), float64 (P,): the point p holds for lam in [lams[p], lams[p+1]).)");

    m.def(
        "nondecreasing_hull",
        [](py::handle c_o, py::handle s_o) {
            auto C = as_f64_1d(c_o, "costs");
            auto S = as_f64_1d(s_o, "scores");
            if (C.shape(0) != S.shape(0)) throw py::value_error("costs and scores must have the same length");
            std::vector<double> hc, hs;
            nondecreasing_hull(C.data(), S.data(), C.shape(0), hc, hs);
            return py::make_tuple(py::array_t<double>(hc.size(), hc.data()), py::array_t<double>(hs.size(), hs.data()));
        },
        py::arg("costs"), py::arg("scores"),
        "Vertices (costs, scores) of the non-decreasing upper convex hull of the points plus (0, 0).");

    m.def(
        "hull_auc",
        [](py::handle c_o, py::handle s_o, double c_max) {
            auto C = as_f64_1d(c_o, "costs");
            auto S = as_f64_1d(s_o, "scores");
            if (C.shape(0) != S.shape(0)) throw py::value_error("costs and scores must have the same length");
            return hull_auc(C.data(), S.data(), C.shape(0), c_max);
        },
        py::arg("costs"), py::arg("scores"), py::arg("c_max"),
        "Area under the non-decreasing hull over cost / c_max in [0, 1] (flat extension, clipped at 1).");

    m.def(
        "count_terms",
        [](const py::sequence& docs) -> py::object {
            const std::size_t n = docs.size();
            std::vector<TermDoc> views(n);
            std::vector<py::object> keep;
            std::deque<std::vector<std::string>> given;  // stable addresses
            keep.reserve(n);
            for (std::size_t i = 0; i < n; ++i) {
                py::object o = docs[i];
                if (PyUnicode_Check(o.ptr())) {
                    if (!PyUnicode_IS_ASCII(o.ptr())) return py::none();
                    views[i].text = std::string_view(static_cast<const char*>(PyUnicode_DATA(o.ptr())),
                                                     static_cast<std::size_t>(PyUnicode_GET_LENGTH(o.ptr())));
                } else if (py::isinstance<py::list>(o)) {
                    given.push_back(o.cast<std::vector<std::string>>());
                    views[i].terms = &given.back();
                } else {
                    throw py::type_error("item " + std::to_string(i) + " is neither a str nor a list of terms");
                }
                keep.push_back(std::move(o));
            }
            std::vector<std::string> terms;
            std::vector<std::int32_t> ids, counts;
            std::vector<std::int64_t> indptr;
            bool ok;
            {
                py::gil_scoped_release nogil;
                ok = count_terms(views, terms, ids, counts, indptr);
            }
            if (!ok) return py::none();
            return py::make_tuple(py::cast(terms), py::array_t<std::int32_t>(ids.size(), ids.data()),
                                  py::array_t<std::int32_t>(counts.size(), counts.data()),
                                  py::array_t<std::int64_t>(indptr.size(), indptr.data()));
        },
        py::arg("docs"),
        R"(Word 1-2-gram counts of documents (the lexical fit's CountVectorizer step): (terms list[str] by first
appearance, ids int32, counts int32, indptr int64 (n_docs + 1)), each document's distinct terms in order of first
appearance in it. A document is an ASCII str (tokenised here) or a list of its terms (tokenised by the caller:
non-ASCII text); None when a str is not ASCII.)");

    py::class_<PyLexicalIndex>(m, "LexicalIndex",
                               "The lexical hybrid's per-prompt transform on ASCII text (knnroute.embed.lexical).")
        .def(py::init([](const std::vector<std::string>& vocabulary, py::handle idf_o, py::handle comp_o) {
                 auto idf = strict<float>(idf_o, "idf", 1);
                 auto comp = strict<float>(comp_o, "components_t", 2);
                 const std::size_t V = vocabulary.size();
                 if (V == 0 || static_cast<std::size_t>(idf.shape(0)) != V || static_cast<std::size_t>(comp.shape(0)) != V ||
                     comp.shape(1) == 0)
                     throw py::value_error("vocabulary (V), idf (V,) and components_t (V, k) disagree");
                 auto* out = new PyLexicalIndex{idf, comp, nullptr};
                 out->index = std::make_unique<LexicalIndex>(vocabulary, idf.data(), comp.data(),
                                                             static_cast<std::size_t>(comp.shape(1)));
                 return out;
             }),
             py::arg("vocabulary"), py::arg("idf"), py::arg("components_t"),
             "vocabulary: V distinct terms; idf float32 (V,); components_t float32 (V, k): term t's LSA row "
             "(borrowed, not copied).")
        .def_property_readonly("dim", [](const PyLexicalIndex& L) { return L.index->dim(); })
        .def("__len__", [](const PyLexicalIndex& L) { return L.index->size(); })
        .def("find", [](const PyLexicalIndex& L, const std::string& term) { return L.index->find(term); },
             py::arg("term"), "Column of a term, or -1.")
        .def(
            "transform",
            [](const PyLexicalIndex& L, const py::sequence& texts, std::size_t max_chars) {
                const std::size_t n = texts.size(), k = L.index->dim();
                std::vector<const char*> ptr(n, nullptr);
                std::vector<std::size_t> len(n, 0);
                std::vector<py::object> keep;
                keep.reserve(n);
                for (std::size_t i = 0; i < n; ++i) {
                    py::object o = texts[i];
                    if (!PyUnicode_Check(o.ptr()))
                        throw py::type_error("item " + std::to_string(i) + " is not a str");
                    if (PyUnicode_IS_ASCII(o.ptr())) {
                        ptr[i] = static_cast<const char*>(PyUnicode_DATA(o.ptr()));
                        len[i] = static_cast<std::size_t>(PyUnicode_GET_LENGTH(o.ptr()));
                    }
                    keep.push_back(std::move(o));
                }
                py::array_t<float> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(k)});
                py::array_t<bool> ok(static_cast<py::ssize_t>(n));
                float* op = out.mutable_data();
                bool* okp = ok.mutable_data();
                {
                    py::gil_scoped_release nogil;
                    for (std::size_t i = 0; i < n; ++i) {
                        okp[i] = ptr[i] != nullptr && L.index->transform(ptr[i], len[i], max_chars, op + i * k);
                        if (!okp[i]) std::fill(op + i * k, op + (i + 1) * k, 0.f);
                    }
                }
                return py::make_tuple(out, ok);
            },
            py::arg("texts"), py::arg("max_chars"),
            R"(Unit LSA rows of ASCII texts: (out float32 (n, k), ok bool (n,)). A row whose text is not pure
ASCII is left zero with ok False: the caller transforms it in Python (Unicode word characters and lowercasing).)");

    py::class_<Router>(m, "Router",
                       "Fused kNN router: support set + outcome tables + aggregation. Thread-safe: routing may run "
                       "concurrently with add/remove.")
        .def(py::init([](py::handle emb, py::handle scores, py::handle costs, long long k, const std::string& weighting,
                         double temperature, double shrinkage, const std::string& precision, int query_threads) {
                 auto X = strict<float>(emb, "embeddings", 2);
                 const Precision prec = parse_precision(precision);
                 if (query_threads < 0) throw py::value_error("query_threads must be >= 0 (0: automatic)");
                 auto S = strict<float>(scores, "scores", 2);
                 auto C = strict<float>(costs, "costs", 2);
                 const std::size_t n = X.shape(0), d = X.shape(1);
                 if (n == 0) throw py::value_error("embeddings are empty: need at least one labelled prompt");
                 if (static_cast<std::size_t>(S.shape(0)) != n || static_cast<std::size_t>(C.shape(0)) != n)
                     throw py::value_error("scores and costs must have one row per embedding (" + std::to_string(n) + ")");
                 if (S.shape(1) != C.shape(1)) throw py::value_error("scores and costs must have the same number of models");
                 const std::size_t kk = check_k_arg(k);
                 if (kk > n) throw py::value_error("k=" + std::to_string(kk) + " exceeds the support size " + std::to_string(n));
                 AggregateParams p = make_params(weighting, temperature, shrinkage);
                 const float *xp = X.data(), *sp = S.data(), *cp = C.data();
                 const std::size_t M = S.shape(1);
                 py::gil_scoped_release nogil;
                 return new Router(xp, n, d, sp, cp, M, kk, p, prec, query_threads);
             }),
             py::arg("embeddings"), py::arg("scores"), py::arg("costs"), py::arg("k") = 100,
             py::arg("weighting") = "uniform", py::arg("temperature") = 0.05, py::arg("shrinkage") = 0.0,
             py::arg("precision") = "f32", py::arg("query_threads") = 0)
        .def_property_readonly("precision", [](const Router& r) { return std::string(precision_name(r.precision())); })
        .def_property_readonly("query_threads", &Router::query_threads)
        .def_property_readonly("memory_bytes", &Router::memory_bytes)
        .def_property_readonly("size", &Router::size)
        .def("__len__", &Router::size)
        .def_property_readonly("dim", &Router::dim)
        .def_property_readonly("n_models", &Router::n_models)
        .def_property_readonly("k", &Router::k)
        .def_property_readonly("weighting", [](const Router& r) { return std::string(weighting_name(r.params().weighting)); })
        .def_property_readonly("temperature", [](const Router& r) { return r.params().temperature; })
        .def_property_readonly("shrinkage", [](const Router& r) { return r.params().shrinkage; })
        .def(
            "search",
            [](const Router& r, py::handle queries, long long k, int n_threads) {
                auto Q = strict<float>(queries, "queries", 2);
                check_dim(Q.shape(1), r.dim(), "queries");
                const std::size_t kk = check_k_arg(k), B = Q.shape(0);
                py::array_t<std::int64_t> idx;
                py::array_t<float> sim;
                SearchResult out = search_out(B, kk, idx, sim);
                const float* qp = Q.data();
                std::int64_t* ip = idx.mutable_data();
                float* sp = sim.mutable_data();
                {
                    py::gil_scoped_release nogil;
                    r.search(qp, B, kk, ip, sp, n_threads);
                }
                return out;
            },
            py::arg("queries"), py::arg("k"), py::arg("n_threads") = 0)
        .def(
            "predict",
            [](const Router& r, py::handle queries, int n_threads) {
                auto Q = strict<float>(queries, "queries", 2);
                check_dim(Q.shape(1), r.dim(), "queries");
                const std::size_t B = Q.shape(0);
                const float* qp = Q.data();
                // The width is re-checked under the core's lock (a concurrent add_model may change it).
                for (;;) {
                    const std::size_t M = r.n_models();
                    py::array_t<float> sh({static_cast<py::ssize_t>(B), static_cast<py::ssize_t>(M)});
                    py::array_t<float> ch({static_cast<py::ssize_t>(B), static_cast<py::ssize_t>(M)});
                    float* shp = sh.mutable_data();
                    float* chp = ch.mutable_data();
                    bool ok;
                    {
                        py::gil_scoped_release nogil;
                        ok = r.predict(qp, B, M, shp, chp, n_threads);
                    }
                    if (ok) return py::make_tuple(sh, ch);
                }
            },
            py::arg("queries"), py::arg("n_threads") = 0,
            "(s_hat float32 (B, M), c_hat float32 (B, M)) for queries float32 (B, d).")
        .def(
            "route",
            [](const Router& r, py::handle queries, py::handle lams_o, int n_threads) {
                auto Q = strict<float>(queries, "queries", 2);
                check_dim(Q.shape(1), r.dim(), "queries");
                auto L = as_f64_1d(lams_o, "lams");
                const std::size_t B = Q.shape(0), nl = L.shape(0);
                for (std::size_t l = 0; l < nl; ++l)
                    if (!std::isfinite(L.data()[l])) throw py::value_error("lams must be finite");
                py::array_t<std::int64_t> out({static_cast<py::ssize_t>(B), static_cast<py::ssize_t>(nl)});
                const float* qp = Q.data();
                const double* lp = L.data();
                std::int64_t* op = out.mutable_data();
                {
                    py::gil_scoped_release nogil;
                    r.route(qp, B, lp, nl, op, n_threads);
                }
                return out;
            },
            py::arg("queries"), py::arg("lams"), py::arg("n_threads") = 0, "Routed model indices int64 (B, L).")
        .def(
            "route_one",
            [](const Router& r, py::handle q_o, double lam) {
                auto q = strict<float>(q_o, "query", 1);
                check_dim(q.shape(0), r.dim(), "query");
                if (!std::isfinite(lam)) throw py::value_error("lam must be finite");
                const float* qp = q.data();
                std::int64_t out;
                {
                    py::gil_scoped_release nogil;
                    out = r.route_one(qp, lam);
                }
                return out;
            },
            py::arg("query"), py::arg("lam"),
            "Fused hot path: one query float32 (d,) and lam -> the routed model index (calling thread, no allocation).")
        .def(
            "route_one_detail",
            [](const Router& r, py::handle q_o, double lam) {
                auto q = strict<float>(q_o, "query", 1);
                check_dim(q.shape(0), r.dim(), "query");
                if (!std::isfinite(lam)) throw py::value_error("lam must be finite");
                const float* qp = q.data();
                RouteDetail d;
                py::array_t<float> sh, ch, cn, sp;
                for (;;) {  // width re-checked under the core's lock, as in predict
                    const std::size_t M = r.n_models();
                    sh = py::array_t<float>(static_cast<py::ssize_t>(M));
                    ch = py::array_t<float>(static_cast<py::ssize_t>(M));
                    cn = py::array_t<float>(static_cast<py::ssize_t>(M));
                    sp = py::array_t<float>(static_cast<py::ssize_t>(M));
                    float* shp = sh.mutable_data();
                    float* chp = ch.mutable_data();
                    float* cnp = cn.mutable_data();
                    float* spp = sp.mutable_data();
                    bool ok;
                    {
                        py::gil_scoped_release nogil;
                        ok = r.route_one_stats(qp, lam, M, shp, chp, cnp, spp, d);
                    }
                    if (ok) break;
                }
                py::typing::Dict<py::str, py::object> out;
                out["model"] = d.model;
                out["kth_similarity"] = d.kth_similarity;
                out["agreement"] = d.agreement;
                out["s_hat"] = sh;
                out["c_hat"] = ch;
                out["count"] = cn;
                out["spread"] = sp;
                return out;
            },
            py::arg("query"), py::arg("lam"),
            "Like route_one, plus confidence: {'model', 'kth_similarity', 'agreement', 's_hat', 'c_hat', 'count', "
            "'spread'} (count, spread: as in predict_stats).")
        .def(
            "predict_stats",
            [](const Router& r, py::handle queries, int n_threads) {
                auto Q = strict<float>(queries, "queries", 2);
                check_dim(Q.shape(1), r.dim(), "queries");
                const std::size_t B = Q.shape(0);
                const float* qp = Q.data();
                for (;;) {
                    const std::size_t M = r.n_models();
                    const std::vector<py::ssize_t> shape{static_cast<py::ssize_t>(B), static_cast<py::ssize_t>(M)};
                    py::array_t<float> sh(shape), ch(shape), cn(shape), sp(shape);
                    float *shp = sh.mutable_data(), *chp = ch.mutable_data(), *cnp = cn.mutable_data(),
                          *spp = sp.mutable_data();
                    bool ok;
                    {
                        py::gil_scoped_release nogil;
                        ok = r.predict_stats(qp, B, M, shp, chp, cnp, spp, n_threads);
                    }
                    if (ok) return py::make_tuple(sh, ch, cn, sp);
                }
            },
            py::arg("queries"), py::arg("n_threads") = 0,
            "(s_hat, c_hat, count, spread), float32 (B, M) each: predict plus, per model, the effective number of "
            "neighbours that observed it ((sum w)^2 / sum w^2) and the weighted standard deviation of their scores.")
        .def(
            "search_per_model",
            [](const Router& r, py::handle queries, int n_threads) {
                auto Q = strict<float>(queries, "queries", 2);
                check_dim(Q.shape(1), r.dim(), "queries");
                const std::size_t B = Q.shape(0);
                const std::size_t k = std::min(r.k(), r.size());
                const float* qp = Q.data();
                for (;;) {
                    const std::size_t M = r.n_models();
                    const std::vector<py::ssize_t> shape{static_cast<py::ssize_t>(B), static_cast<py::ssize_t>(M),
                                                         static_cast<py::ssize_t>(k)};
                    py::array_t<std::int64_t> idx(shape);
                    py::array_t<float> sim(shape);
                    py::array_t<std::int64_t> cnt({static_cast<py::ssize_t>(B), static_cast<py::ssize_t>(M)});
                    std::int64_t *ip = idx.mutable_data(), *cp = cnt.mutable_data();
                    float* sp = sim.mutable_data();
                    bool ok;
                    {
                        py::gil_scoped_release nogil;
                        ok = r.search_per_model(qp, B, M, ip, sp, cp, n_threads);
                    }
                    if (ok) return py::make_tuple(idx, sim, cnt);
                }
            },
            py::arg("queries"), py::arg("n_threads") = 0,
            "Per-model neighbourhoods: (idx int64 (B, M, k), sim float32 (B, M, k), count int64 (B, M)): for each "
            "model the k nearest rows that observed it (score not NaN), best first; slots past count are -1 / 0.")
        .def_property_readonly("partial_rows", &Router::partial_rows,
                               "Rows missing some model's score (0: all models share one neighbourhood).")
        .def_property(
            "half_life", &Router::half_life,
            [](Router& r, double h) {
                if (!(h >= 0.0) || std::isinf(h)) throw py::value_error("half_life must be finite and >= 0 (0: no decay)");
                py::gil_scoped_release nogil;
                r.set_half_life(h);
            },
            "Time decay: a row of time t weighs 2^(-(now - t) / half_life), now = the largest row time; 0: off.")
        .def_property(
            "common_radius", &Router::common_radius,
            [](Router& r, bool on) {
                py::gil_scoped_release nogil;
                r.set_common_radius(on);
            },
            "With partial rows: each model averages its observing rows within the widest of the models' k-th "
            "neighbours (True, default) or only its own k nearest observing rows (False).")
        .def("times", [](const Router& r) { auto v = r.times(); return py::array_t<double>(v.size(), v.data()); })
        .def(
            "set_times",
            [](Router& r, py::handle t_o) {
                auto T = as_f64_1d(t_o, "times");
                if (static_cast<std::size_t>(T.shape(0)) != r.size())
                    throw py::value_error("times needs one value per row (" + std::to_string(r.size()) + ")");
                for (py::ssize_t i = 0; i < T.shape(0); ++i)
                    if (!std::isfinite(T.data()[i])) throw py::value_error("times must be finite");
                const double* tp = T.data();
                const std::size_t n = T.shape(0);
                py::gil_scoped_release nogil;
                r.set_times(tp, n);
            },
            py::arg("times"))
        .def(
            "add",
            [](Router& r, py::handle emb, py::handle scores, py::handle costs, py::handle times_o) {
                auto X = strict<float>(emb, "embeddings", 2);
                auto S = strict<float>(scores, "scores", 2);
                auto C = strict<float>(costs, "costs", 2);
                check_dim(X.shape(1), r.dim(), "embeddings");
                const std::size_t n = X.shape(0);
                const std::size_t M = r.n_models();
                if (static_cast<std::size_t>(S.shape(0)) != n || static_cast<std::size_t>(C.shape(0)) != n ||
                    static_cast<std::size_t>(S.shape(1)) != M || static_cast<std::size_t>(C.shape(1)) != M)
                    throw py::value_error("scores and costs must be (" + std::to_string(n) + ", " + std::to_string(M) +
                                          "): one row per new embedding, one column per model (NaN = missing)");
                py::array_t<double> T;
                const double* tp = nullptr;
                if (!times_o.is_none()) {
                    T = as_f64_1d(times_o, "times");
                    if (static_cast<std::size_t>(T.shape(0)) != n)
                        throw py::value_error("times needs one value per new row (" + std::to_string(n) + ")");
                    for (std::size_t i = 0; i < n; ++i)
                        if (!std::isfinite(T.data()[i])) throw py::value_error("times must be finite");
                    tp = T.data();
                }
                const float *xp = X.data(), *sp = S.data(), *cp = C.data();
                py::gil_scoped_release nogil;
                r.add(xp, n, sp, cp, tp);
            },
            py::arg("embeddings"), py::arg("scores"), py::arg("costs"), py::arg("times") = py::none(),
            "Append rows (outcomes NaN = not observed) with their times (None: 0, the fitted rows' time).")
        .def(
            "add_model",
            [](Router& r, py::handle s_o, py::handle c_o) {
                auto S = strict<float>(s_o, "scores", 1);
                auto C = strict<float>(c_o, "costs", 1);
                if (static_cast<std::size_t>(S.shape(0)) != r.size() || static_cast<std::size_t>(C.shape(0)) != r.size())
                    throw py::value_error("a new model needs one score and cost per support row (" + std::to_string(r.size()) +
                                          "); use NaN where it was not observed");
                const float *sp = S.data(), *cp = C.data();
                py::gil_scoped_release nogil;
                r.add_model(sp, cp);
            },
            py::arg("scores"), py::arg("costs"))
        .def(
            "remove",
            [](Router& r, std::vector<std::int64_t> rows) {
                py::gil_scoped_release nogil;
                r.remove(rows);
            },
            py::arg("rows"))
        .def("embeddings", [](const Router& r) {
            auto v = r.embeddings();
            py::array_t<float> out({static_cast<py::ssize_t>(v.size() / r.dim()), static_cast<py::ssize_t>(r.dim())});
            std::copy(v.begin(), v.end(), out.mutable_data());
            return out;
        })
        .def("scores", [](const Router& r) {
            std::size_t M = 0;
            auto v = r.scores(&M);  // M read under the same lock as the table
            py::array_t<float> out({static_cast<py::ssize_t>(v.size() / M), static_cast<py::ssize_t>(M)});
            std::copy(v.begin(), v.end(), out.mutable_data());
            return out;
        })
        .def("costs", [](const Router& r) {
            std::size_t M = 0;
            auto v = r.costs(&M);  // M read under the same lock as the table
            py::array_t<float> out({static_cast<py::ssize_t>(v.size() / M), static_cast<py::ssize_t>(M)});
            std::copy(v.begin(), v.end(), out.mutable_data());
            return out;
        })
        .def("prior_scores", [](const Router& r) { auto v = r.prior_scores(); return py::array_t<float>(v.size(), v.data()); })
        .def("prior_costs", [](const Router& r) { auto v = r.prior_costs(); return py::array_t<float>(v.size(), v.data()); });

    m.attr("__all__") = py::typing::List<py::str>(py::make_tuple("isa", "available_isas", "set_isa", "topk_cosine", "SupportSet", "precisions", "pool_threads", "last_rerank_count", "aggregate", "tune_grid", "LexicalIndex", "count_terms",
                                       "route", "envelope", "sweep", "nondecreasing_hull", "hull_auc", "Router"));
}
