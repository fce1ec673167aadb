"""The HTTP service over real loopback sockets: decisions, errors, limits, metrics, and the saved
RouterBench router served from a new process with the same decisions as in-process routing."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from knnroute.production import FallbackPolicy, ProductionRouter
from knnroute.routers.knn import KNNRouter
from tests.servers import free_port
from tests.servers import thread_server as _thread_server

D, M = 16, 3
NAMES = ["cheap", "mid", "best"]


@contextlib.contextmanager
def thread_server(app, timeout: float = 20.0) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The service on uvicorn in a background thread (no lifespan: the tests hold the router themselves)."""
    with _thread_server(app, timeout=timeout, lifespan="off") as url:
        yield url


@contextlib.contextmanager
def process_server(router_file: Path, *extra: str, timeout: float = 120.0) -> Iterator[str]:
    """``python -m knnroute serve`` in a new process on a free loopback port; always stopped."""
    port = free_port()
    cmd = [sys.executable, "-m", "knnroute", "serve", "--router", str(router_file), "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning", *extra]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    log_file = router_file.with_suffix(".serve.log")
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log_file.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - t0 > timeout:
                raise RuntimeError("server did not become healthy in time")
            time.sleep(0.2)
        print(f"server healthy after {time.monotonic() - t0:.1f} s")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait(5)


# --------------------------------------------------------------------------- synthetic, in-thread
def _synthetic() -> tuple[ProductionRouter, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, D)).astype(np.float32)
    S = np.column_stack([X[:, 0] > 0.5, X[:, 0] > 0, np.ones(400)]).astype(np.float64)
    C = np.tile([1e-4, 1e-3, 1e-2], (400, 1))
    p = ProductionRouter(KNNRouter(k=10).fit(X, S, C, model_names=NAMES), default_lambda=20.0)
    Xv = rng.normal(size=(100, D)).astype(np.float32)
    Sv = np.column_stack([Xv[:, 0] > 0.5, Xv[:, 0] > 0, np.ones(100)]).astype(np.float64)
    p.budget_table(Xv, Sv, np.tile([1e-4, 1e-3, 1e-2], (100, 1)))
    p.set_fallback(FallbackPolicy("best", max_distance=0.95))
    return p, rng.normal(size=(50, D)).astype(np.float32)


@pytest.fixture(scope="module")
def synth() -> Iterator[tuple[ProductionRouter, np.ndarray, str]]:
    from knnroute.service.app import create_app

    p, Q = _synthetic()
    app = create_app(p, max_body_bytes=64 * 1024, max_batch=64)
    with thread_server(app) as url:
        yield p, Q, url


def test_route_embedding_matches_in_process(synth) -> None:  # type: ignore[no-untyped-def]
    p, Q, url = synth
    with httpx.Client(base_url=url, timeout=10) as c:
        for q in Q[:20]:
            for lam in (0.0, 50.0, 2000.0):
                r = c.post("/route", json={"embedding": q.tolist(), "lambda": lam})
                assert r.status_code == 200, r.text
                body = r.json()
                d = p.decide(q, lam)
                assert body["model"] == d.model and body["routed_model"] == d.routed_model
                assert body["lambda"] == lam and body["fallback"] == d.fallback
                assert set(body["predicted"]) == set(NAMES)
                assert body["predicted"]["mid"]["score"] == pytest.approx(float(d.s_hat[1]))
                assert body["predicted"]["best"]["cost"] == pytest.approx(float(d.c_hat[2]))
                assert body["confidence"]["kth_similarity"] == pytest.approx(d.kth_similarity)
        r = c.post("/route", json={"embedding": Q[0].tolist()})
        assert r.json()["lambda"] == 20.0  # the router's default


def test_budget_request(synth) -> None:  # type: ignore[no-untyped-def]
    p, Q, url = synth
    budget = float(np.median(p.budget.mean_cost))
    r = httpx.post(url + "/route", json={"embedding": Q[1].tolist(), "max_cost": budget}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    bp = p.lambda_for_budget(budget)
    assert body["lambda"] == bp.lam and body["budget"]["feasible"]
    assert body["budget"]["expected_cost"] <= budget
    assert body["budget"]["expected_score"] == pytest.approx(bp.mean_score)


def test_batch_endpoint(synth) -> None:  # type: ignore[no-untyped-def]
    p, Q, url = synth
    items = [{"embedding": q.tolist(), "lambda": 100.0} for q in Q]
    r = httpx.post(url + "/route/batch", json={"items": items}, timeout=10)
    assert r.status_code == 200, r.text
    assert [x["model"] for x in r.json()["results"]] == list(p.route(Q, 100.0))
    r = httpx.post(url + "/route/batch", json={"items": items + items}, timeout=10)
    assert r.status_code == 422 and "limit is 64" in r.json()["detail"]
    r = httpx.post(url + "/route/batch", json={"items": [items[0], {"embedding": [1.0, 2.0]}]}, timeout=10)
    assert r.status_code == 422 and "item 1" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b'{"embedding": [1, 2,', 400, "malformed JSON"),
        (b'{"embedding": [1.0, 2.0]}', 422, "expects 16"),
        (json.dumps({"embedding": [1.0] * D, "temperature": 3}).encode(), 422, "extra_forbidden"),
        (json.dumps({"embedding": [1.0] * D, "prompt": "hi"}).encode(), 422, "exactly one"),
        (json.dumps({"embedding": [1.0] * D, "lambda": 1, "max_cost": 1}).encode(), 422, "at most one"),
        (b'{"embedding": [NaN' + b", 1.0" * (D - 1) + b"]}", 422, "finite"),
        (json.dumps({"embedding": [0.0] * D}).encode(), 422, "zero vector"),
        (json.dumps({"embedding": "abc"}).encode(), 422, "list"),
        (json.dumps({"prompt": "route me"}).encode(), 422, "embeddings only"),
        (json.dumps({"embedding": [1.0] * D, "max_cost": -1}).encode(), 422, "greater than or equal"),
        (b"[1, 2, 3]", 422, "valid dictionary"),
    ],
)
def test_bad_requests_get_4xx_and_service_keeps_serving(synth, body: bytes, status: int, needle: str) -> None:  # type: ignore[no-untyped-def]
    _, _, url = synth
    r = httpx.post(url + "/route", content=body, headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == status, r.text
    assert needle in r.text
    assert httpx.get(url + "/health", timeout=10).status_code == 200


def test_wrong_content_type_is_415(synth) -> None:  # type: ignore[no-untyped-def]
    _, Q, url = synth
    r = httpx.post(url + "/route", content=json.dumps({"embedding": Q[0].tolist()}),
                   headers={"content-type": "text/plain"}, timeout=10)
    assert r.status_code == 415 and "application/json" in r.json()["detail"]


def test_oversized_bodies_get_413(synth) -> None:  # type: ignore[no-untyped-def]
    _, Q, url = synth
    big = json.dumps({"embedding": [0.5] * 20000}).encode()  # ~100 KB > 64 KiB limit
    r = httpx.post(url + "/route", content=big, headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 413 and "larger than 65536" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    r = httpx.post(url + "/route", content=chunks(), headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 413
    r = httpx.post(url + "/route", json={"embedding": Q[0].tolist()}, timeout=10)
    assert r.status_code == 200


def test_health_openapi_and_metrics(synth) -> None:  # type: ignore[no-untyped-def]
    _, Q, url = synth
    with httpx.Client(base_url=url, timeout=10) as c:
        h = c.get("/health").json()
        assert h["status"] == "ok" and h["dim"] == D and h["models"] == NAMES and h["prompts"] is False
        spec = c.get("/openapi.json").json()
        assert {"/route", "/route/batch", "/health", "/metrics"} <= set(spec["paths"])
        req = spec["components"]["schemas"]["RouteRequest"]
        assert {"prompt", "embedding", "lambda", "max_cost"} <= set(req["properties"])
        assert req.get("additionalProperties") is False
        ok_total = 'knnroute_requests_total{endpoint="/route",method="POST",status="200"}'
        before = _metric(c.get("/metrics").text, ok_total)
        far = (np.ones(D) * 100 + np.arange(D)).tolist()
        c.post("/route", json={"embedding": Q[2].tolist(), "lambda": 0.0})
        r = c.post("/route", json={"embedding": far, "lambda": 0.0}).json()
        text = c.get("/metrics").text
    after = _metric(text, 'knnroute_requests_total{endpoint="/route",method="POST",status="200"}')
    assert after == before + 2
    assert _metric(text, 'knnroute_request_duration_seconds_count{endpoint="/route"}') >= 2
    assert sum(_metric(text, f'knnroute_routed_total{{model="{m}"}}') for m in NAMES) >= 2
    assert 'knnroute_requests_total{endpoint="/route",method="POST",status="422"}' in text
    assert _metric(text, "knnroute_support_size") == 400
    if r["fallback"]:
        assert _metric(text, f'knnroute_fallbacks_total{{reason="{r["fallback"]}"}}') >= 1


def _metric(text: str, key: str) -> float:
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_concurrent_clients(synth) -> None:  # type: ignore[no-untyped-def]
    p, Q, url = synth
    expect = list(p.route(Q, 100.0))
    results: dict[int, list[str]] = {}

    def client(t: int) -> None:
        with httpx.Client(base_url=url, timeout=20) as c:
            results[t] = [c.post("/route", json={"embedding": q.tolist(), "lambda": 100.0}).json()["model"] for q in Q]

    threads = [threading.Thread(target=client, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert all(results[t] == expect for t in range(6))


# ------------------------------------------------------------------- real data, separate process
@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.embed
def test_routerbench_router_served_from_new_process(real_data: Path, tmp_path: Path) -> None:
    """Fit on RouterBench, save, load in a new server process, route over HTTP: same decisions."""
    pytest.importorskip("sentence_transformers")
    from knnroute.commands.fit import fit_router
    from knnroute.data import concat, load_dataset
    from knnroute.embed import embed_dataset

    prod, report = fit_router("routerbench", progress=False, lexical=False, text_norm=False)  # MiniLM vectors
    assert report["n_train"] > 1000 and prod.budget is not None
    path = prod.save(tmp_path / "routerbench.knnr")

    # test prompts and their (cached) embeddings, embedded exactly as at fit time
    ds = embed_dataset(concat(load_dataset("routerbench")), progress=False)
    te = ds.split_index("test")
    rng = np.random.default_rng(0)
    pick = rng.choice(te, size=240, replace=False)
    X = ds.embeddings[pick]
    lams = [0.0, 100.0, 1000.0, 10000.0]
    budgets = [float(b) for b in np.quantile(prod.budget.mean_cost, [0.2, 0.6])]

    with process_server(path) as url, httpx.Client(base_url=url, timeout=60) as c:
        h = c.get("/health").json()
        assert h["size"] == prod.size and h["models"] == prod.model_names and h["prompts"] is True
        for lam in lams:
            got = []
            for s in range(0, len(X), 60):  # 60 x 384 floats stay under the 1 MiB body limit
                items = [{"embedding": x.tolist(), "lambda": lam} for x in X[s : s + 60]]
                r = c.post("/route/batch", json={"items": items})
                assert r.status_code == 200, r.text
                got += [x["model"] for x in r.json()["results"]]
            assert got == [prod.decide(x, lam).model for x in X], f"lambda={lam}"
        for b in budgets:
            got = [c.post("/route", json={"embedding": x.tolist(), "max_cost": b}).json()["model"] for x in X[:60]]
            assert got == [prod.decide(x, max_cost=b).model for x in X[:60]]
        # raw prompts: the server strips the shared prefix and embeds with the recorded MiniLM
        prompts = [ds.prompts[i] for i in pick[:12]]
        lam = 1000.0
        for i, text in zip(pick[:12], prompts, strict=False):
            body = c.post("/route", json={"prompt": text, "lambda": lam}).json()
            d = prod.decide(ds.embeddings[i], lam)
            if body["model"] != d.model:  # only a near-tie may flip from float rounding of the encoder
                u = d.s_hat - lam * d.c_hat
                names = prod.model_names
                margin = abs(u[names.index(body["model"])] - u[names.index(d.model)])
                assert margin < 1e-3, (body["model"], d.model, margin)
        metrics = c.get("/metrics").text
        assert _metric(metrics, 'knnroute_queries_total{input="prompt"}') == 12
    assert math.isfinite(report["test_auc"])
