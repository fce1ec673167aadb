"""Gateway replicas on a shared feedback store (issue 28), on SQLite and on a real PostgreSQL server:
any replica accepts feedback for any answer, every replica converges, a restarted one replays past its
snapshot, per-key limits hold on the sum over replicas, ``kill -9`` loses no acknowledged feedback; the
old JSON-lines log is imported once and a second process on it is refused; ``--workers N``."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("wordllama")

from bench.gateway_replicas import Replica, env, kill_test, make_router, upstreams, write_config
from knnroute.gateway.config import ConfigError, load_config
from knnroute.gateway.serve import build
from tests.servers import free_port, thread_server

KEY = "sk-test-replicas"


@pytest.fixture(scope="module")
def ups() -> Iterator[dict[str, str]]:
    with upstreams() as u:
        yield u


@pytest.fixture(scope="module")
def base_router(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replicas") / "router.knnr"
    make_router(path)
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/feedback.db"
    from tests.pg import create_database

    return create_database(request.getfixturevalue("postgres_url"))


@contextlib.contextmanager
def replica(cfg_path: Path) -> Iterator[tuple[str, Any]]:
    """One in-process replica (its own router and store connections) on a loopback port."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KNNROUTE_API_KEYS", KEY)
        mp.setenv("FAKE_UPSTREAM_KEY", "sk-up")
        app, store = build(load_config(cfg_path))
        store.start(3600)
        try:
            with thread_server(app) as url:
                yield url, store
        finally:
            store.close()
            app.state.gateway.decisions.close()


def chat(url: str, text: str, model: str = "knnroute") -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"}, timeout=10,
                      json={"model": model, "messages": [{"role": "user", "content": text}]})


def feedback(url: str, rid: str, score: float) -> httpx.Response:
    return httpx.post(url + "/v1/feedback", headers={"authorization": f"Bearer {KEY}"}, timeout=10,
                      json={"request_id": rid, "score": score})


def decisions(url: str, texts: list[str]) -> list[Any]:
    r = httpx.post(url + "/route/batch", headers={"authorization": f"Bearer {KEY}"}, timeout=10,
                   json={"items": [{"prompt": t, "lambda": 0.0} for t in texts]})
    assert r.status_code == 200, r.text
    return [(d["model"], d["predicted"]) for d in r.json()["results"]]


def wait_for(cond: Any, timeout: float = 5.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


TEXTS = ["tell me a joke about dogs", "write a python function that sorts numbers", "integrate x from zero to one",
         "say something nice about bridges", "fix this javascript bug in the tree parser"]


def test_any_replica_accepts_feedback_and_all_converge(base_router: Path, ups: dict[str, str], tmp_path: Path,
                                                        store_url: str) -> None:
    router = tmp_path / "router.knnr"
    router.write_bytes(base_router.read_bytes())
    cfg = write_config(tmp_path / "gw.toml", router, ups, store_url)
    with replica(cfg) as (a, sa), replica(cfg) as (b, sb):
        base = sa.router.size
        before = decisions(a, TEXTS)
        rids = []
        for i, t in enumerate(TEXTS * 4):
            r = chat([a, b][i % 2], t)
            assert r.status_code == 200, r.text
            rids.append((i % 2, r.headers["x-knnroute-request-id"]))
        for i, (who, rid) in enumerate(rids):  # each feedback to the replica that did NOT answer
            r = feedback([b, a][who], rid, 1.0 if i % 3 else 0.0)
            assert r.status_code == 200, r.text
        again = feedback(a, rids[0][1], 0.5)
        assert again.status_code == 409 and again.headers["x-should-retry"] == "false"
        assert feedback(b, "kr-" + "0" * 32, 0.5).status_code == 404
        assert wait_for(lambda: sa.router.size == sb.router.size == base + len(rids), 10.0)
        assert decisions(a, TEXTS) == decisions(b, TEXTS) != before  # the feedback changed predictions
        assert sa.save()  # one snapshot writer; the other finds nothing it lacks
    with replica(cfg) as (c, sc):  # a third replica started later: the snapshot, then only what it lacks
        assert sc.router.size == base + len(rids) and sc.applied == 0
        assert decisions(c, TEXTS) == decisions(c, TEXTS)
        assert feedback(c, rids[1][1], 0.5).status_code == 409  # rated elsewhere, before the restart


def test_restart_replays_only_past_the_snapshot(base_router: Path, ups: dict[str, str], tmp_path: Path,
                                                store_url: str) -> None:
    router = tmp_path / "router.knnr"
    router.write_bytes(base_router.read_bytes())
    cfg = write_config(tmp_path / "gw.toml", router, ups, store_url)
    with replica(cfg) as (a, sa):
        base = sa.router.size
        for t in TEXTS[:3]:
            assert feedback(a, chat(a, t).headers["x-knnroute-request-id"], 1.0).status_code == 200
        assert sa.save()
        for t in TEXTS[3:]:
            assert feedback(a, chat(a, t).headers["x-knnroute-request-id"], 0.0).status_code == 200
        sa.saved_seq = sa.seq  # as if killed now: the file holds the first three only
        snap = sa.store.snapshots()
    assert list(snap.values()) == [3]
    with replica(cfg) as (_, sb):
        assert sb.router.size == base + len(TEXTS) and sb.seq == len(TEXTS) and sb.applied == len(TEXTS) - 3


def test_key_limits_hold_on_the_sum_over_replicas(base_router: Path, ups: dict[str, str], tmp_path: Path,
                                                  store_url: str) -> None:
    router = tmp_path / "router.knnr"
    router.write_bytes(base_router.read_bytes())
    cfg = write_config(tmp_path / "gw.toml", router, ups, store_url, limits="requests_per_minute = 6")
    while time.time() % 60 > 45:  # the per-minute count must not restart during the test
        time.sleep(0.5)
    with replica(cfg) as (a, _), replica(cfg) as (b, _):
        codes = []
        for i in range(12):
            model = "small" if i % 3 == 0 else "knnroute"  # pass-through answers count too
            codes.append(chat([a, b][i % 2], TEXTS[i % len(TEXTS)], model).status_code)
            time.sleep(0.3)  # each replica reads the other's counts from the store (refreshed every 0.2 s)
        assert codes[:6] == [200] * 6 and codes[6:] == [429] * 6
        r = chat(a, "hello there")
        assert r.status_code == 429 and "6 requests per minute" in r.json()["error"]["message"]
        m = httpx.get(a + "/metrics", headers={"authorization": f"Bearer {KEY}"}, timeout=10).text
        line = next(x for x in m.splitlines() if x.startswith("knnroute_gateway_key_requests{"))
        assert line.endswith(" 6.0") and KEY not in m


def test_a_lost_database_is_a_503_not_a_lost_feedback(base_router: Path, ups: dict[str, str], tmp_path: Path,
                                                       postgres_url: str) -> None:
    import psycopg

    from tests.pg import create_database

    url = create_database(postgres_url)
    router = tmp_path / "router.knnr"
    router.write_bytes(base_router.read_bytes())
    cfg = write_config(tmp_path / "gw.toml", router, ups, url)
    with replica(cfg) as (a, _):
        assert feedback(a, chat(a, TEXTS[0]).headers["x-knnroute-request-id"], 1.0).status_code == 200
        rid = chat(a, TEXTS[1]).headers["x-knnroute-request-id"]
        time.sleep(0.2)  # its context is committed
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {url.rsplit('/', 1)[1]} WITH (FORCE)")
        r = feedback(a, rid, 1.0)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        msg = r.json()["error"]["message"]
        assert msg.startswith("feedback not stored: ") and "\n" not in msg
        assert chat(a, TEXTS[2]).status_code == 200  # routing goes on without the store


def test_second_process_on_a_json_log_is_refused(base_router: Path, ups: dict[str, str], tmp_path: Path) -> None:
    router = tmp_path / "router.knnr"
    router.write_bytes(base_router.read_bytes())
    cfg = tmp_path / "gw.toml"
    write_config(cfg, router, ups, "sqlite:///unused.db")
    cfg.write_text(cfg.read_text().replace('store = "sqlite:///unused.db"', 'log = "feedback.jsonl"'))
    app, store = build(load_config(cfg))
    try:
        with pytest.raises(ConfigError, match="in use by another gateway process") as e:
            build(load_config(cfg))
        assert "\n" not in str(e.value) and "store" in str(e.value)
        r = subprocess.run([sys.executable, "-m", "knnroute", "gateway", "--config", str(cfg), "--port",
                            str(free_port())], capture_output=True, text=True, env=env(), timeout=120)
        assert r.returncode == 2 and "in use by another gateway process" in r.stderr
        assert len(r.stderr.strip().splitlines()[-1]) > 0 and "Traceback" not in r.stderr
    finally:
        store.close()
    r = subprocess.run([sys.executable, "-m", "knnroute", "gateway", "--config", str(cfg), "--workers", "2"],
                       capture_output=True, text=True, env=env(), timeout=120)
    assert r.returncode == 2 and "--workers 2 needs a shared feedback store" in r.stderr


def test_old_json_log_is_imported_once(base_router: Path, ups: dict[str, str], tmp_path: Path) -> None:
    router = tmp_path / "router.knnr"
    router.write_bytes(base_router.read_bytes())
    cfg = tmp_path / "gw.toml"
    write_config(cfg, router, ups, "sqlite:///unused.db")
    cfg.write_text(cfg.read_text().replace('store = "sqlite:///unused.db"', 'log = "feedback.jsonl"'))
    with replica(cfg) as (a, sa):  # the old single-process mode
        base = sa.router.size
        rids = [chat(a, t).headers["x-knnroute-request-id"] for t in TEXTS]
        for rid in rids[:3]:
            assert feedback(a, rid, 1.0).status_code == 200
        sa.saved_seq = sa.seq  # as if killed: the router file lacks the three, the log has them
    lines = (tmp_path / "feedback.jsonl").read_text().splitlines()
    assert [json.loads(x)["seq"] for x in lines] == [1, 2, 3]
    cfg.write_text(cfg.read_text().replace('log = "feedback.jsonl"',
                                           'log = "feedback.jsonl"\nstore = "sqlite:///feedback.db"'))
    with replica(cfg) as (b, sb):
        assert sb.router.size == base + 3 and sb.store.max_seq() == 3
        assert not (tmp_path / "feedback.jsonl").exists() and (tmp_path / "feedback.jsonl.imported").exists()
        assert feedback(b, rids[0], 0.0).status_code == 409  # rated before the import
    with replica(cfg) as (_, sc):  # not imported twice
        assert sc.router.size == base + 3


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_kill_9_replicas(kind: str, ups: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Three replica processes, feedback to a replica that did not answer, ``kill -9`` of a random one
    every 2.5 s: no acknowledged feedback is lost, every replica holds every record, identical decisions."""
    if kind == "sqlite":
        url, separate = f"sqlite:///{tmp_path}/feedback.db", False
    else:
        from tests.pg import create_database

        url, separate = create_database(request.getfixturevalue("postgres_url")), True
    r = kill_test(url, tmp_path / "run", ups, seconds=7.0, kill_every=2.5, senders=4, separate_snapshots=separate)
    assert r["kills"] >= 1 and r["acknowledged"] > 50
    assert r["lost"] == 0 and r["in_store"] >= r["acknowledged"]
    assert r["converged_s"] is not None, r  # every replica's size equal to base + store (the time: bench/)
    assert r["decisions_identical"]


@pytest.mark.slow
def test_workers_share_the_port_and_converge(base_router: Path, ups: dict[str, str], tmp_path: Path) -> None:
    router = tmp_path / "router.knnr"
    router.write_bytes(base_router.read_bytes())
    cfg = write_config(tmp_path / "gw.toml", router, ups, f"sqlite:///{tmp_path}/feedback.db")
    rep = Replica(cfg, free_port(), tmp_path / "workers.log", workers=2)
    rep.start()
    try:
        base = rep.size()
        with httpx.Client(timeout=10) as c:  # new connections: the kernel spreads them over the workers
            n = 0
            for t in TEXTS * 4:
                resp = c.post(rep.url + "/v1/chat/completions", headers={"connection": "close"},
                              json={"model": "knnroute", "messages": [{"role": "user", "content": t}]})
                assert resp.status_code == 200
                fb = c.post(rep.url + "/v1/feedback", headers={"connection": "close"},
                            json={"request_id": resp.headers["x-knnroute-request-id"], "score": 1.0})
                assert fb.status_code == 200, fb.text
                n += 1
        sizes: set[int] = set()

        def same() -> bool:
            sizes.clear()
            for _ in range(20):
                h = httpx.get(rep.url + "/health", headers={"connection": "close"}, timeout=5)
                sizes.add(h.json()["size"])
            return sizes == {base + n}

        assert wait_for(same, 3.0), sizes
    finally:
        rep.stop()
