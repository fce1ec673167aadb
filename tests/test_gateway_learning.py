"""The gateway's online learning (issue 29): exploration policy in routing, feedback rows with time and key,
revert (store method, admin endpoint, CLI) restoring predictions exactly, the per-key cap."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import knnroute
from knnroute.gateway.feedback import FeedbackStore, Pending
from knnroute.gateway.learning import DEFAULT_POLICY, KeyCapExceeded, explore_choice, explore_policy, window
from knnroute.gateway.shared import SharedFeedbackStore
from knnroute.gateway.store import SQLiteStore
from knnroute.production import ProductionRouter
from knnroute.routers.explore import ExplorePolicy
from knnroute.routers.knn import KNNRouter
from tests.fake_upstream import make_upstream, thread_server
from tests.test_gateway import ADMIN, KEY, NAMES, _prompts, gateway, write_config


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    from knnroute.embed import get_embedder

    prompts, topic = _prompts()
    X = get_embedder("wordllama").encode(prompts).astype(np.float32)
    S = np.column_stack([topic == 0, np.where(topic == 1, 1.0, 0.2), np.full(len(topic), 0.9)]).astype(float)
    C = np.tile([1e-5, 1e-4, 1e-3], (len(topic), 1))
    return {"X": X, "S": S, "C": C, "topic": topic}


def _router(data: dict[str, Any], path: Path, half_life: float = 0.0) -> ProductionRouter:
    X, S, C = data["X"], data["S"], data["C"]
    fit = np.arange(len(X)) % 2 == 0  # half the prompts fitted, the rest arrive as traffic
    p = ProductionRouter(KNNRouter(k=5, half_life=half_life).fit(X[fit], S[fit], C[fit], model_names=NAMES),
                         embedder="wordllama")
    p.save(path)
    return p


def _feed(store: Any, data: dict[str, Any], key: str, invert: bool, tag: str, n: int = 40) -> None:
    """n feedbacks from one key over the traffic prompts; scores inverted for an adversary."""
    X, S = data["X"], data["S"]
    rows = np.flatnonzero(np.arange(len(X)) % 2 == 1)
    for i in range(n):
        r = int(rows[i % len(rows)])
        j = i % len(NAMES)
        rid = f"{tag}-{i}"
        store.remember(rid, Pending(X[r], NAMES[j], 1e-4, key))
        s = float(S[r, j])
        store.submit(rid, 1.0 - s if invert else s)


def _state(router: ProductionRouter, data: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s, c = router.predict(data["X"])
    return s, c, np.asarray(router.route(data["X"], lam=0.0, return_names=False))


@pytest.mark.parametrize("backend", ["log", "sqlite"])
def test_revert_restores_predictions_exactly(data: dict[str, Any], tmp_path: Path, backend: str) -> None:
    """Honest feedback, then a batch with every score inverted from one key; reverting that key gives the
    router's predictions and decisions back bit for bit, live, after a reload of the saved file, and (shared
    store) on a second replica following the store."""
    path = tmp_path / "r.knnr"
    router = _router(data, path, half_life=30.0)

    def open_(r: ProductionRouter) -> Any:
        if backend == "log":
            return FeedbackStore(r, path, tmp_path / "fb.jsonl")
        return SharedFeedbackStore(r, path, SQLiteStore(tmp_path / "fb.db", r.dim), poll_s=0.05)

    store = open_(router)
    _feed(store, data, "good", False, "g")
    want = _state(router, data)
    assert router.size == len(data["X"]) // 2 + 40
    replica = None
    if backend == "sqlite":
        replica = SharedFeedbackStore(_router(data, tmp_path / "r2.knnr", half_life=30.0), tmp_path / "r2.knnr",
                                      SQLiteStore(tmp_path / "fb.db", router.dim))
        replica.catch_up()
        assert all(np.array_equal(a, b) for a, b in zip(_state(replica.router, data), want, strict=True))
    _feed(store, data, "evil", True, "e")
    bad = _state(router, data)
    assert not np.array_equal(bad[0], want[0])
    times = router.core.times()
    assert times.max() == store.seq and times[-1] == store.seq  # each feedback row's time: its sequence number
    out = store.revert(key="evil")
    assert out["reverted"] == 40 and out["rows_removed"] == 40
    got = _state(router, data)
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    with pytest.raises((ValueError, KeyError)):  # a reverted request cannot be rated again (409 / 404)
        store.submit("e-0", 0.5)
    store.close()
    again = knnroute.load(path)
    reopened = open_(again)
    reopened.replay()
    assert all(np.array_equal(a, b) for a, b in zip(_state(again, data), want, strict=True))
    reopened.close()
    if replica is not None:
        replica.catch_up()
        replica.apply_reverts()
        assert all(np.array_equal(a, b) for a, b in zip(_state(replica.router, data), want, strict=True))
        replica.close()


def test_revert_by_time_window(data: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "r.knnr"
    router = _router(data, path)
    store = FeedbackStore(router, path, tmp_path / "fb.jsonl")
    _feed(store, data, "a", False, "a", n=10)
    t = time.time()
    time.sleep(0.01)
    _feed(store, data, "b", True, "b", n=10)
    out = store.revert(since=t)
    assert out["reverted"] == 10
    recs = [json.loads(line) for line in (tmp_path / "fb.jsonl").read_text().splitlines()]
    assert [r["request_id"] for r in recs] == [f"a-{i}" for i in range(10)] and {r["key"] for r in recs} == {"a"}
    store.close()
    for bad in [(None, None, None), ("k", 5.0, 1.0), ("", None, None), (None, float("nan"), None)]:
        with pytest.raises(ValueError, match="key|since"):
            window(*bad)


@pytest.mark.parametrize("backend", ["log", "sqlite"])
def test_key_cap_limits_one_keys_share_of_a_neighbourhood(data: dict[str, Any], tmp_path: Path,
                                                          backend: str) -> None:
    """k = 5, cap 0.4: one key writes at most 2 of a model's 5 nearest rows around a prompt; another key
    still can write there."""
    path = tmp_path / "r.knnr"
    router = _router(data, path)
    store: Any = (FeedbackStore(router, path, tmp_path / "fb.jsonl", key_share_max=0.4) if backend == "log" else
                  SharedFeedbackStore(router, path, SQLiteStore(tmp_path / "fb.db", router.dim), key_share_max=0.4))
    x = data["X"][1]
    for i in range(2):
        store.remember(f"a{i}", Pending(x, "coder", 1e-4, "a"))
        store.submit(f"a{i}", 0.0)
    store.remember("a2", Pending(x, "coder", 1e-4, "a"))
    with pytest.raises(KeyCapExceeded, match="key_share_max"):
        store.submit("a2", 0.0)
    store.remember("b0", Pending(x, "coder", 1e-4, "b"))
    store.submit("b0", 0.0)
    store.close()


def test_explore_choice_never_over_fallback_and_policy_resolution() -> None:
    class D:
        s_hat = np.array([0.5, 0.5, 0.5])
        c_hat = np.zeros(3)
        count = np.array([1.0, 1.0, 1.0])
        spread = np.array([0.5, 0.5, 0.5])
        lam = 0.0
        fallback: str | None = None

    rng = np.random.default_rng(0)
    picks = {explore_choice(ExplorePolicy("thompson", scale=1.0), D(), NAMES, NAMES[:2], rng) for _ in range(50)}
    assert picks == {"small", "coder"}  # only routable models, more than one
    d = D()
    d.fallback = "far"
    assert explore_choice(ExplorePolicy("thompson"), d, NAMES, NAMES, rng) is None
    assert explore_policy(0.1, {}) is None  # a number: the uniform coin
    assert explore_policy(None, {"explore": {"name": "ucb", "scale": 2.0}}) == ExplorePolicy("ucb", scale=2.0)
    assert explore_policy(None, {"explore": {"name": "bogus"}}) == DEFAULT_POLICY  # unreadable: the default


def test_admin_revert_endpoint_and_cli(data: dict[str, Any], tmp_path: Path) -> None:
    """POST /admin/feedback/revert (admin key) through a running gateway, then `knnroute feedback revert` on
    the stopped gateway's shared store; bad bodies are one-line 422s."""
    path = tmp_path / "router.knnr"
    _router(data, path)
    app, sc = make_upstream("small")
    with thread_server(app) as up:
        cfg = write_config(tmp_path, path, {m: up for m in NAMES}, extra='store = "sqlite:///fb.db"')
        with gateway(cfg) as (url, gw):
            before = _state(gw.router, data)
            size0 = gw.router.size
            rids = []
            with httpx.Client(base_url=url, headers={"authorization": f"Bearer {KEY}"}) as c:
                for i in range(3):
                    r = c.post("/v1/chat/completions", json={
                        "model": "knnroute", "messages": [{"role": "user", "content": _prompts()[0][40 * i]}]})
                    assert r.status_code == 200, r.text
                    rids.append(r.headers["x-knnroute-request-id"])
                for rid in rids:
                    assert c.post("/v1/feedback", json={"request_id": rid, "score": 0.0}).status_code == 200
                assert gw.router.size == size0 + 3
                assert c.post("/admin/feedback/revert", json={"key": "x"}).status_code in (401, 403)
            with httpx.Client(base_url=url, headers={"authorization": f"Bearer {ADMIN}"}) as a:
                for body in ({}, {"key": 3}, {"since": "yesterday"}, {"until": 1, "since": 2}, {"what": 1}, [1]):
                    r = a.post("/admin/feedback/revert", json=body)
                    assert r.status_code == 422 and "\n" not in r.json()["error"]["message"], body
                for raw in (b"[" * 3000, b"{not json", b"x" * 5000, b'{"since": NaN}'):
                    r = a.post("/admin/feedback/revert", content=raw)
                    assert r.status_code == 422 and "\n" not in r.json()["error"]["message"], raw[:20]
                r = a.post("/admin/feedback/revert", json={"since": 0})
                assert r.status_code == 200 and r.json()["reverted"] == 3, r.text
                assert gw.router.size == size0
                assert all(np.array_equal(x, y) for x, y in zip(_state(gw.router, data), before, strict=True))
    res = subprocess.run([sys.executable, "-m", "knnroute", "feedback", "revert", "--config", str(cfg),
                          "--key", "nobody"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["reverted"] == 0
    res = subprocess.run([sys.executable, "-m", "knnroute", "feedback", "revert", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "give a key id" in res.stderr


def test_fold_keeps_feedback_rows_bounded_and_replays_alike(data: dict[str, Any], tmp_path: Path) -> None:
    """max_rows = 100: after 700 feedbacks the router holds at most 100 + 256 feedback rows (the newest), and a
    gateway restarted from an older file replaying the log holds the same rows (the cut depends on seq only)."""
    path = tmp_path / "r.knnr"
    router = _router(data, path)
    fitted = router.size
    store = FeedbackStore(router, path, tmp_path / "fb.jsonl", max_rows=100)
    _feed(store, data, "a", False, "a", n=700)
    n_fb = router.size - fitted
    assert 100 <= n_fb <= 100 + 256 and store.folded == 700 - n_fb
    assert min(int(i.rsplit("-", 1)[1]) for i in router.ids if i.startswith("fb-")) == 700 - n_fb  # the newest are kept
    want = _state(router, data)
    ids = list(router.ids)
    store.log.close()  # a kill: the file (never saved) has no feedback; the log has all 700
    again = knnroute.load(path)
    re = FeedbackStore(again, path, tmp_path / "fb.jsonl", max_rows=100)
    assert re.replay() == 700
    assert list(again.ids) == ids
    assert all(np.array_equal(a, b) for a, b in zip(_state(again, data), want, strict=True))
    re.close()


def test_gateway_routes_with_the_configured_policy_but_never_explores_sessions_or_named_models(
        data: dict[str, Any], tmp_path: Path) -> None:
    """[feedback.explore] policy = "uniform", epsilon = 1: routed requests go to several models (the policy
    is called where the gateway orders candidates); a session's pinned model and an explicit model name are
    never explored."""
    path = tmp_path / "router.knnr"
    _router(data, path)
    app, _ = make_upstream("small")
    prompt = _prompts()[0][0]
    with thread_server(app) as up:
        cfg = write_config(tmp_path, path, {m: up for m in NAMES},
                           extra='[feedback.explore]\npolicy = "uniform"\nepsilon = 1.0')
        with gateway(cfg) as (url, gw), httpx.Client(base_url=url, headers={"authorization": f"Bearer {KEY}"}) as c:
            assert gw.explore_policy == ExplorePolicy("uniform", epsilon=1.0)

            def ask(model: str = "knnroute", session: str | None = None) -> str:
                h = {"x-session-id": session} if session else {}
                r = c.post("/v1/chat/completions", headers=h,
                           json={"model": model, "messages": [{"role": "user", "content": prompt}]})
                assert r.status_code == 200, r.text
                return r.headers["x-knnroute-model"]

            assert len({ask() for _ in range(30)}) >= 2
            pinned = ask(session="s1")
            assert {ask(session="s1") for _ in range(15)} == {pinned}
            assert {ask("big") for _ in range(5)} == {"big"}


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/feedback.db"
    from tests.pg import create_database

    return create_database(request.getfixturevalue("postgres_url"))


def test_store_revert_on_both_back_ends(store_url: str) -> None:
    """Store.revert deletes one key's records in a window, lists them for every replica, forgets their
    contexts (a second feedback is unknown), and keeps the highest sequence number."""
    from knnroute.gateway.shared import open_store
    from knnroute.gateway.store import Context

    a, b = open_store(store_url, 4), open_store(store_url, 4)
    try:
        now = time.time()
        reqs = [(f"r{i}", Context(np.full(4, i + 1, dtype=np.float32), "m", 0.1, "evil" if i % 2 else "good", now))
                for i in range(6)]
        outs = a.commit(reqs, [(f"r{i}", 0.5, now + i) for i in range(6)])
        assert [o.seq > 0 for o in outs] == [True] * 6
        top = a.max_seq()
        assert b.context("r1") is not None and b.context("nope") is None
        gone = a.revert("evil", now + 2, np.inf)  # r3, r5
        assert sorted(gone) == ["r3", "r5"]
        assert b.max_seq() == top  # the last record (r5) was deleted: the high-water mark stays
        last, ids = b.reverts_after(0)
        assert sorted(ids) == ["r3", "r5"] and b.reverts_after(last) == (last, [])
        assert [r.request_id for r in b.records_after(0)] == ["r0", "r1", "r2", "r4"]
        assert b.context("r3") is None
        assert b.commit([], [("r3", 1.0, now)])[0].error == "unknown"
    finally:
        a.close()
        b.close()


def test_cli_revert_on_a_stopped_gateways_log(data: dict[str, Any], tmp_path: Path) -> None:
    """`knnroute feedback revert` on a JSON-lines log: the key's records leave the log and their rows the
    router file; the result equals the router before that key's feedback."""
    path = tmp_path / "router.knnr"
    router = _router(data, path)
    store = FeedbackStore(router, path, tmp_path / "feedback.jsonl")
    _feed(store, data, "good", False, "g", n=20)
    want = _state(router, data)
    _feed(store, data, "evil", True, "e", n=20)
    store.close()  # saved with all 40 rows
    cfg = write_config(tmp_path, path, {m: "http://127.0.0.1:9" for m in NAMES})
    res = subprocess.run([sys.executable, "-m", "knnroute", "feedback", "revert", "--config", str(cfg),
                          "--key", "evil"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["reverted"] == 20
    again = knnroute.load(path)
    assert all(np.array_equal(a, b) for a, b in zip(_state(again, data), want, strict=True))
    keys = {json.loads(line)["key"] for line in (tmp_path / "feedback.jsonl").read_text().splitlines()}
    assert keys == {"good"}


def test_fit_stores_half_life_and_exploration_policy(data: dict[str, Any], tmp_path: Path) -> None:
    """`knnroute fit --half-life 25 --explore ucb --explore-scale 0.3` (its last step, on a fitted router):
    the file carries both, and the gateway resolves the stored policy; without --explore, the default."""
    import argparse

    from knnroute.commands.fit import _online, configure

    p = argparse.ArgumentParser()
    configure(p)
    args = p.parse_args(["--data", "x", "--out", "y", "--half-life", "25", "--explore", "ucb", "--explore-scale",
                         "0.3"])
    prod = _router(data, tmp_path / "a.knnr")
    report: dict[str, Any] = {}
    _online(prod, report, args)
    prod.save(tmp_path / "a.knnr")
    again = knnroute.load(tmp_path / "a.knnr")
    assert again.half_life == 25.0 and report["half_life"] == 25.0
    assert explore_policy(None, again.meta) == ExplorePolicy("ucb", scale=0.3)
    plain = p.parse_args(["--data", "x", "--out", "y"])
    prod2 = _router(data, tmp_path / "b.knnr")
    _online(prod2, {}, plain)
    assert prod2.half_life == 0.0 and explore_policy(None, prod2.meta) == DEFAULT_POLICY
    with pytest.raises(SystemExit):
        p.parse_args(["--data", "x", "--out", "y", "--half-life", "-1"])
