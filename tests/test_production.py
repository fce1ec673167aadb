"""ProductionRouter: live updates equal a refit, thread-safety under updates, budgets, fallback, prompts."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from knnroute.embed import CallableEmbedder
from knnroute.production import BudgetTable, FallbackPolicy, ProductionRouter
from knnroute.routers.knn import KNNRouter

D, M = 32, 4
NAMES = ["small", "medium", "large", "huge"]
PRICE = np.array([1e-4, 5e-4, 2e-3, 1e-2])


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clustered prompts where the best model depends on the cluster (so routing is not trivial)."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(123).normal(size=(8, D))
    lab = rng.integers(0, 8, size=n)
    X = (centers[lab] + 0.6 * rng.normal(size=(n, D))).astype(np.float32)
    p = np.random.default_rng(321).uniform(0.2, 0.95, size=(8, M))
    p[:, -1] = np.maximum(p[:, -1], p.max(axis=1))  # the priciest model is the best everywhere
    S = (rng.random((n, M)) < p[lab]).astype(np.float64)
    C = PRICE * rng.uniform(0.5, 1.5, size=(n, M))
    return X, S, C


def _router(X: np.ndarray, S: np.ndarray, C: np.ndarray, ids: list[str] | None = None,
            names: list[str] = NAMES) -> ProductionRouter:
    return ProductionRouter(KNNRouter(k=20, weighting="similarity").fit(X, S, C, model_names=names), ids=ids)


# ------------------------------------------------------------------------------------ live updates
def test_add_equals_refit() -> None:
    X, S, C = _data(600, 0)
    Xn, Sn, Cn = _data(100, 1)
    p = _router(X, S, C)
    new_ids = p.add(Xn, Sn, Cn, ids=[f"n{i}" for i in range(100)])
    assert new_ids[0] == "n0" and p.size == 700 and p.ids[-1] == "n99"
    ref = _router(np.vstack([X, Xn]), np.vstack([S, Sn]), np.vstack([C, Cn]))
    Q, _, _ = _data(300, 2)
    for lam in (0.0, 50.0, 500.0):
        np.testing.assert_array_equal(p.route(Q, lam), ref.route(Q, lam))
    assert p.add(Xn[:2], Sn[:2], Cn[:2])[0].startswith("auto-")
    with pytest.raises(ValueError, match="unique"):
        p.add(Xn[:1], Sn[:1], Cn[:1], ids=["n0"])
    with pytest.raises(ValueError, match="dimension"):
        p.add(Xn[:1, :5], Sn[:1], Cn[:1])
    with pytest.raises(ValueError, match="model columns"):
        p.add(Xn[:1], Sn[:1, :2], Cn[:1, :2])


def test_remove_ids_equals_refit() -> None:
    X, S, C = _data(600, 0)
    ids = [f"p{i}" for i in range(600)]
    p = _router(X, S, C, ids)
    drop = [f"p{i}" for i in range(0, 600, 7)]
    assert p.remove_ids(drop) == len(drop)
    keep = np.array([i % 7 != 0 for i in range(600)])
    ref = _router(X[keep], S[keep], C[keep])
    Q, _, _ = _data(300, 2)
    np.testing.assert_array_equal(p.route(Q, 50.0), ref.route(Q, 50.0))
    assert p.ids == [ids[i] for i in np.flatnonzero(keep)]
    with pytest.raises(KeyError, match="unknown prompt id"):
        p.remove_ids(["p0"])


def test_add_model_equals_refit() -> None:
    X, S, C = _data(500, 0)
    rng = np.random.default_rng(9)
    s_new = (rng.random(500) < 0.99).astype(np.float64)  # a cheap, excellent new model
    c_new = np.full(500, 5e-5)
    s_new[::5] = np.nan
    p = _router(X, S, C, [f"p{i}" for i in range(500)])
    p.add_model("newcomer", s_new, c_new, price=(0.05, 0.1))
    ref = _router(X, np.column_stack([S, s_new]), np.column_stack([C, c_new]), names=[*NAMES, "newcomer"])
    Q, _, _ = _data(200, 3)
    np.testing.assert_array_equal(p.route(Q, 100.0), ref.route(Q, 100.0))
    assert (p.route(Q, 100.0) == "newcomer").mean() > 0.5
    # sparse form: outcomes only for the prompts where it was observed
    p.add_model("sparse", {"p1": 1.0, "p2": 0.0}, {"p1": 1e-3, "p2": 1e-3})
    assert p.model_names[-1] == "sparse" and p.n_models == 6
    with pytest.raises(ValueError, match="already routed"):
        p.add_model("sparse", s_new, c_new)
    with pytest.raises(ValueError, match="one value per support row"):
        p.add_model("short", s_new[:3], c_new[:3])


# ------------------------------------------------------------------------------------- concurrency
def test_concurrent_routing_matches_serial() -> None:
    X, S, C = _data(3000, 0)
    p = _router(X, S, C)
    Q, _, _ = _data(400, 4)
    expect = p.route(Q, 80.0)
    out: dict[int, list[str]] = {}

    def worker(t: int) -> None:
        out[t] = [p.decide(q, 80.0).model for q in Q]

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert len(out) == 8
    for t in range(8):
        assert out[t] == list(expect)


def test_concurrent_routing_during_updates_is_serial_equivalent() -> None:
    """Every answer given while updates run equals the serial answer of a state between the one seen
    when the call started and the one after it returned (no torn reads, no crashes)."""
    X, S, C = _data(2000, 0)
    ids = [f"p{i}" for i in range(2000)]
    Q, _, _ = _data(150, 5)
    lam = 80.0
    rng = np.random.default_rng(11)
    ops: list[tuple] = []
    next_id = 0
    live = list(ids)
    for step in range(16):
        if step == 8:
            ops.append(("model",))  # outcomes for the rows present at that point
        elif step % 2 == 0:
            Xa, Sa, Ca = _data(60, 100 + step)
            new = [f"a{next_id + i}" for i in range(60)]
            next_id += 60
            ops.append(("add", Xa, Sa, Ca, new))
            live += new
        else:
            gone = list(rng.choice(live, size=40, replace=False))
            ops.append(("remove", gone))
            live = [i for i in live if i not in set(gone)]

    def apply(p: ProductionRouter, op: tuple) -> None:
        if op[0] == "add":
            pad = np.full((len(op[4]), p.n_models - M), np.nan)  # not observed for the late model
            p.add(op[1], np.hstack([op[2], pad]), np.hstack([op[3], pad]), ids=op[4])
        elif op[0] == "remove":
            p.remove_ids(op[1])
        else:
            n = p.size
            p.add_model("late", (np.arange(n) % 3 == 0).astype(np.float64), np.full(n, 2e-4))

    # serial answers of every state 0..T
    serial = _router(X, S, C, ids)
    states = [list(serial.route(Q, lam))]
    for op in ops:
        apply(serial, op)
        states.append(list(serial.route(Q, lam)))
    T = len(ops)
    assert len({tuple(s) for s in states}) > 3  # the updates do change answers

    live_router = _router(X, S, C, ids)
    version = [0]
    stop = threading.Event()
    records: list[list[tuple[int, int, int, str]]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def reader(t: int) -> None:
        try:
            i = t
            while not stop.is_set():
                qi = i % len(Q)
                v0 = version[0]
                if t % 2:
                    ans = live_router.decide(Q[qi], lam).model
                else:  # batch path on the same rows
                    ans = str(live_router.route(Q[qi : qi + 1], lam)[0])
                v1 = version[0]
                records[t].append((qi, v0, v1, ans))
                i += 1
        except BaseException as e:  # pragma: no cover - surfaced below
            errors.append(e)

    def writer() -> None:
        try:
            for op in ops:
                time.sleep(0.01)
                apply(live_router, op)
                version[0] += 1
            time.sleep(0.02)
        except BaseException as e:  # pragma: no cover
            errors.append(e)
        finally:
            stop.set()

    threads = [threading.Thread(target=reader, args=(t,)) for t in range(4)] + [threading.Thread(target=writer)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors
    n_checked = 0
    for rec in records:
        for qi, v0, v1, ans in rec:
            allowed = {states[s][qi] for s in range(v0, min(v1 + 1, T) + 1)}
            assert ans in allowed, (qi, v0, v1, ans, allowed)
            n_checked += 1
    assert n_checked > 500
    assert len({v0 for rec in records for (_, v0, _, _) in rec}) > T // 2  # reads did interleave with updates
    assert live_router.ids == serial.ids
    np.testing.assert_array_equal(live_router.route(Q, lam), serial.route(Q, lam))


# ------------------------------------------------------------------------------------------ budgets
@pytest.fixture(scope="module")
def fitted() -> tuple[ProductionRouter, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    X, S, C = _data(1500, 0)
    p = _router(X, S, C)
    val = _data(400, 6)
    p.budget_table(*val, source="synthetic val")
    return p, val


def _measure(p: ProductionRouter, val: tuple, lam: float) -> tuple[float, float, np.ndarray]:
    Xv, Sv, Cv = val
    idx = p.route(Xv, lam, return_names=False)
    rows = np.arange(len(idx))
    share = np.bincount(idx, minlength=M) / len(idx)
    return float(Cv[rows, idx].mean()), float(np.nan_to_num(Sv[rows, idx]).mean()), share


def test_budget_table_is_the_exact_curve(fitted) -> None:  # type: ignore[no-untyped-def]
    p, val = fitted
    t = p.budget
    assert t is not None and t.n == 400 and len(t.lams) > 10
    assert np.all(np.diff(t.lams) > 0)
    assert np.all(np.diff(t.mean_cost) <= 1e-15)  # cost never rises with lambda
    for i in range(0, len(t.lams), max(1, len(t.lams) // 15)):
        cost, score, shares = _measure(p, val, t.lams[i])
        assert cost == pytest.approx(t.mean_cost[i], rel=1e-9)
        assert score == pytest.approx(t.mean_score[i], rel=1e-9)
        np.testing.assert_allclose(shares, t.shares[i])


def test_lambda_for_budget(fitted) -> None:  # type: ignore[no-untyped-def]
    p, val = fitted
    t = p.budget
    for budget in np.quantile(t.mean_cost, [0.1, 0.5, 0.9]):
        bp = p.lambda_for_budget(float(budget))
        assert bp.feasible and bp.mean_cost <= budget
        ok = t.mean_cost <= budget
        assert bp.mean_score == pytest.approx(t.mean_score[ok].max())
        cost, score, _ = _measure(p, val, bp.lam)
        assert (cost, score) == (pytest.approx(bp.mean_cost), pytest.approx(bp.mean_score))
    low = p.lambda_for_budget(0.0)
    assert not low.feasible and low.mean_cost == pytest.approx(t.mean_cost.min())
    # held-out data given directly gives the same answer as the stored table
    budget = float(np.median(t.mean_cost))
    assert p.lambda_for_budget(budget, *val) == p.lambda_for_budget(budget)
    lam, bp = p.resolve_lambda(max_cost=float(np.median(t.mean_cost)))
    assert bp is not None and lam == bp.lam


def test_lambda_for_share(fitted) -> None:  # type: ignore[no-untyped-def]
    p, val = fitted
    bp = p.lambda_for_share("huge", 0.25)
    assert bp.feasible and bp.shares["huge"] <= 0.25
    _, _, shares = _measure(p, val, bp.lam)
    assert shares[NAMES.index("huge")] == pytest.approx(bp.shares["huge"])
    assert p.lambda_for_share("huge", 1.0).mean_score == pytest.approx(p.budget.mean_score.max())
    with pytest.raises(ValueError, match="unknown model"):
        p.lambda_for_share("nobody", 0.5)


def test_budget_table_thinning_keeps_pareto_points() -> None:
    from knnroute.production.budgets import thin as _thin

    rng = np.random.default_rng(0)
    cost = np.sort(rng.random(10_000))[::-1]
    score = np.sort(rng.random(10_000))[::-1]
    keep = _thin(cost, score, 500)
    assert len(keep) <= 10_000 and np.all(np.diff(keep) > 0)
    table = BudgetTable(np.arange(10_000.0), cost, score, np.zeros((10_000, 1)), ["m"], 10)
    assert BudgetTable.from_dict(table.to_dict()).mean_cost.tolist() == cost.tolist()


# ----------------------------------------------------------------------------------------- fallback
def test_fallback_on_distance_and_agreement(fitted) -> None:  # type: ignore[no-untyped-def]
    p, val = fitted
    Xv = val[0]
    far = np.random.default_rng(0).normal(size=(50, D)).astype(np.float32) * 10 + 100  # far from every cluster
    try:
        pol = p.calibrate_fallback("huge", Xv, lam=500.0, distance_quantile=0.9)
        assert pol.max_distance is not None
        decisions = [p.decide(x, 500.0) for x in Xv]
        rate = np.mean([d.fallback == "distance" for d in decisions])
        assert 0.05 <= rate <= 0.15
        assert all(d.model == "huge" for d in decisions if d.fallback)
        assert all(d.model == d.routed_model for d in decisions if not d.fallback)
        ds = [p.decide(x, 500.0) for x in far]
        assert sum(d.fallback == "distance" for d in ds) >= 45
        # batch routing applies the same policy
        assert list(p.route(Xv, 500.0)) == [d.model for d in decisions]
        p.set_fallback(FallbackPolicy("huge", min_agreement=1.01))
        assert all(p.decide(x, 500.0).fallback == "agreement" for x in Xv[:20])
        with pytest.raises(ValueError, match="not one of the router's models"):
            p.set_fallback({"model": "gpt-9"})
    finally:
        p.set_fallback(None)


def test_decide_rejects_bad_queries(fitted) -> None:  # type: ignore[no-untyped-def]
    p, _ = fitted
    with pytest.raises(ValueError, match="dimension 5"):
        p.decide(np.ones(5))
    with pytest.raises(ValueError, match="zero vector"):
        p.decide(np.zeros(D))
    with pytest.raises(ValueError, match="NaN"):
        p.decide(np.full(D, np.nan))
    with pytest.raises(ValueError, match="either lam or max_cost"):
        p.decide(np.ones(D), lam=1.0, max_cost=1.0)


# ------------------------------------------------------------------------------------------ prompts
def _toy_embedder() -> CallableEmbedder:
    """Deterministic bag-of-characters embedding (no model download)."""

    def fn(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), D), dtype=np.float32)
        for i, t in enumerate(texts):
            for ch in t:
                out[i, ord(ch) % D] += 1.0
            out[i, 0] += 0.01
        return out

    return CallableEmbedder(fn, identity="toy-chars:v1", dim=D)


def test_route_prompts_uses_recorded_embedder_and_prefix(tmp_path) -> None:  # type: ignore[no-untyped-def]
    emb = _toy_embedder()
    prefix = "Shared few-shot examples. " * 5 + "\n\n"
    prompts = [("a" * (i % 7 + 1)) + ("b" * (i % 3)) + f" question {i}" for i in range(300)]
    X = emb.encode(prompts, progress=False)
    rng = np.random.default_rng(0)
    S = rng.random((300, M))
    C = np.tile(PRICE, (300, 1))
    p = ProductionRouter(
        KNNRouter(k=10).fit(X, S, C, model_names=NAMES),
        embedder=emb,
        prefix_stripper={"boundary": "\n\n", "min_chars": 64, "prefixes": {"*": prefix}},
    )
    assert p.embedder_info["identity"] == "toy-chars:v1"
    new = ["aaa question x", "bbbb question y"]
    want = list(p.route(emb.encode(new, progress=False), 100.0))
    assert p.route_prompts([prefix + t for t in new], 100.0) == want  # the shared prefix is stripped
    # a saved router records the identity; a callable cannot be rebuilt from the file: set it again
    from knnroute.production import load

    q = load(p.save(tmp_path / "toy.knnr"))
    with pytest.raises(ValueError, match="cannot be rebuilt"):
        q.route_prompts(new, 100.0)
    q.set_embedder(emb)
    assert q.route_prompts([prefix + t for t in new], 100.0) == want
    other = CallableEmbedder(lambda t: np.ones((len(t), D)), identity="other:v2", dim=D)
    with pytest.raises(ValueError, match="embedder mismatch"):
        q.set_embedder(other)
    with pytest.raises(TypeError, match="not one str"):
        q.route_prompts("just one", 1.0)  # type: ignore[arg-type]


def test_prompt_encoder_alone_and_held_by_the_router() -> None:
    """The PromptEncoder strips the recorded prefix and encodes; a router built on one holds it as is."""
    from knnroute.embed.prompt import PromptEncoder

    emb = _toy_embedder()
    prefix = "Shared few-shot examples. " * 5 + "\n\n"
    enc = PromptEncoder(emb, {"boundary": "\n\n", "min_chars": 64, "prefixes": {"*": prefix}})
    assert enc.identity == "toy-chars:v1" and enc.has_embedder and enc.loaded is emb
    np.testing.assert_array_equal(enc.encode([prefix + "abc"]), emb.encode(["abc"], progress=False))
    np.testing.assert_array_equal(enc.encode_one(prefix + "abc"), emb.encode(["abc"], progress=False)[0])
    with pytest.raises(ValueError, match="takes text only"):
        enc.encode(["abc"], images=[b"not an image"])
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, D)).astype(np.float32)
    knn = KNNRouter(k=5).fit(X, rng.random((40, M)), np.tile(PRICE, (40, 1)), model_names=NAMES)
    p = ProductionRouter(knn, embedder=enc)
    assert p.encoder is enc and p.embedder_info is enc.info and p.embedder() is emb
    with pytest.raises(ValueError, match="give prefix_stripper to the PromptEncoder"):
        ProductionRouter(knn, embedder=enc, prefix_stripper={"prefixes": {}})
    none = PromptEncoder()
    assert not none.has_embedder and none.to_dict() == {"identity": None, "spec": None, "dim": None}
    with pytest.raises(ValueError, match="no recorded embedder"):
        none.encode(["abc"])
