"""atheris fuzz target: the compiled core's entry points (``knnroute_core``).

Builds a ``Router`` from fuzzer-chosen sizes, settings and float bit patterns (NaN, inf, subnormals,
zero rows included), then calls search / predict / route / route_one(_detail) / add / add_model /
remove, and the free functions (topk_cosine, aggregate, route, envelope, sweep, nondecreasing_hull,
hull_auc), with fuzzer-chosen arguments. Contract: every call returns or raises ``ValueError`` /
``TypeError``; anything else, or a crash (run it on the ASan build to catch memory errors), is a finding.
"""

from __future__ import annotations

import sys

import atheris
import numpy as np

import knnroute_core as kc

OK = (ValueError, TypeError)
ISAS = kc.available_isas()  # every kernel set this CPU has, narrowest first


def _floats(fdp: atheris.FuzzedDataProvider, n: int, nice: bool) -> np.ndarray:
    if n <= 0:
        return np.zeros(0, dtype=np.float32)
    if nice:  # mostly ordinary values so deep paths run
        raw = fdp.ConsumeBytes(n)
        vals = np.frombuffer(raw.ljust(n, b"\x01"), dtype=np.uint8).astype(np.float32) / 37.0 - 3.0
        return vals
    raw = fdp.ConsumeBytes(4 * n).ljust(4 * n, b"\x00")
    return np.frombuffer(raw, dtype=np.float32).copy()


def _call(fn, *a):  # type: ignore[no-untyped-def]
    try:
        return fn(*a)
    except OK:
        return None


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    n = fdp.ConsumeIntInRange(0, 40)
    d = fdp.ConsumeIntInRange(0, 80)  # >= 64 reaches the VNNI block kernels (ISA avx512-vnni)
    M = fdp.ConsumeIntInRange(0, 6)
    k = fdp.ConsumeIntInRange(-2, 50)
    nice = fdp.ConsumeIntInRange(0, 3) != 0
    weighting = ["uniform", "similarity", "softmax", "bogus"][fdp.ConsumeIntInRange(0, 3)]
    temp = [0.05, 0.0, -1.0, 1e-30, float("nan")][fdp.ConsumeIntInRange(0, 4)]
    shrink = [0.0, 3.0, -1.0, float("inf"), float("nan")][fdp.ConsumeIntInRange(0, 4)]
    X = _floats(fdp, n * d, nice).reshape(n, d) if n * d else np.zeros((n, d), np.float32)
    S = _floats(fdp, n * M, nice).reshape(n, M) if n * M else np.zeros((n, M), np.float32)
    C = np.abs(_floats(fdp, n * M, nice)).reshape(n, M) if n * M else np.zeros((n, M), np.float32)
    if fdp.ConsumeBool() and S.size:
        S[fdp.ConsumeIntInRange(0, n - 1), fdp.ConsumeIntInRange(0, M - 1)] = np.nan
    lam = [0.0, 1.0, 1e6, -5.0, float("nan"), float("inf")][fdp.ConsumeIntInRange(0, 5)]
    nq = fdp.ConsumeIntInRange(3, 6)  # >= 4 takes the batch path (int8: the packed batch kernel)
    Q = _floats(fdp, nq * d, nice).reshape(nq, d) if d else np.zeros((nq, 0), np.float32)
    precision = ["f32", "bf16", "f16", "int8"][fdp.ConsumeIntInRange(0, 3)]
    kc.set_isa(ISAS[fdp.ConsumeIntInRange(0, len(ISAS) - 1)])

    # free functions
    res = _call(kc.topk_cosine, Q, X, k, 1)
    if res is not None:
        idx, sim = res
        _call(kc.aggregate, idx, sim, S, C, weighting, temp, shrink)
        if fdp.ConsumeBool() and idx.size:  # out-of-range / negative neighbour ids must be refused
            bad = idx.copy()
            bad.flat[0] = fdp.ConsumeIntInRange(-5, 100)
            _call(kc.aggregate, bad, sim, S, C, weighting, temp, shrink)
    sh = S[:3] if len(S) >= 3 else S
    ch = C[: len(sh)]
    _call(kc.route, np.ascontiguousarray(sh), np.ascontiguousarray(ch), [lam, 0.0])
    if M:
        _call(kc.envelope, np.ascontiguousarray(S[0]) if n else np.zeros(M, np.float32),
              np.ascontiguousarray(C[0]) if n else np.zeros(M, np.float32))
    _call(kc.sweep, np.ascontiguousarray(sh), np.ascontiguousarray(ch), sh.astype(np.float64), ch.astype(np.float64))
    pts = _floats(fdp, 8, nice).astype(np.float64)
    _call(kc.nondecreasing_hull, pts[:4], pts[4:])
    _call(kc.hull_auc, pts[:4], pts[4:], [1.0, 0.0, -1.0, float("nan")][fdp.ConsumeIntInRange(0, 3)])

    # the fused router and its updates
    r = _call(kc.Router, X, S, C, k, weighting, temp, shrink, precision)
    if r is None:
        return
    for _ in range(fdp.ConsumeIntInRange(1, 6)):
        op = fdp.ConsumeIntInRange(0, 8)
        if op == 0:
            kq, nt = fdp.ConsumeIntInRange(-1, 60), fdp.ConsumeIntInRange(0, 3)
            got = _call(r.search, Q, kq, nt)
            if got is not None and precision != "f32":
                # Differential check: compact storage must return the float32 neighbours exactly.
                ref = kc.SupportSet(r.embeddings()).search(Q, kq, 1)
                if not (np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])):
                    raise AssertionError(f"{precision} search differs from f32 (n={r.size}, d={d}, k={kq})")
        elif op == 1:
            _call(r.predict, Q, fdp.ConsumeIntInRange(0, 3))
        elif op == 2:
            _call(r.route, Q, [lam, 1.0], 1)
        elif op == 3 and d:
            _call(r.route_one, np.ascontiguousarray(Q[0]), lam)
        elif op == 4 and d:
            _call(r.route_one_detail, np.ascontiguousarray(Q[1]), lam)
        elif op == 5:
            m = fdp.ConsumeIntInRange(0, 3)
            _call(r.add, np.ascontiguousarray(Q[:m]), np.ascontiguousarray(np.zeros((m, r.n_models), np.float32)),
                  np.ascontiguousarray(np.zeros((m, r.n_models), np.float32)))
        elif op == 6:
            col = _floats(fdp, r.size, nice)
            _call(r.add_model, col, np.abs(col))
        elif op == 7:
            rows = [fdp.ConsumeIntInRange(-2, r.size + 2) for _ in range(fdp.ConsumeIntInRange(0, 4))]
            _call(r.remove, rows)
        else:
            r.embeddings(), r.scores(), r.costs(), r.prior_scores(), r.prior_costs()


def main() -> None:
    atheris.instrument_all()  # coverage feedback from every loaded Python function (incl. this harness)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
