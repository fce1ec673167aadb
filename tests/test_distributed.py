"""Ray: batch routing with Ray Data, the evaluation grid as Ray tasks, Ray Serve replicas, and the
service's reload (admin endpoint, file watcher).

One local Ray session (2 CPUs, no dashboard, small object store) is shared by the module's Ray tests.
Every Ray result is compared with an in-process reference computed by a different code path:
``ProductionRouter.route`` (the core's batch route), ``predict``, ``KNNRouter.confidence``, ``decide``,
and the serial ``evaluate`` loop.
"""

from __future__ import annotations

import hashlib
import json
import math
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from knnroute.production import ProductionRouter
from knnroute.routers.knn import KNNRouter

pytestmark = [
    # Ray Data warns (UserWarning) when a tiny input gives an actor pool fewer blocks than actors.
    pytest.mark.filterwarnings("ignore::UserWarning:ray.*"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

D, M = 16, 3
NAMES = ["cheap", "mid", "best"]
LAM = 40.0


def _router(seed: int = 0, flip: bool = False, n: int = 600) -> ProductionRouter:
    """A synthetic router: clustered prompts, per-cluster best model (``flip`` reverses the scores)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, D))
    lab = rng.integers(0, 6, size=n)
    X = (centres[lab] + 0.3 * rng.normal(size=(n, D))).astype(np.float32)
    S = np.clip(0.5 + 0.4 * np.sin(lab[:, None] + np.arange(M)[None, :]) + 0.1 * rng.normal(size=(n, M)), 0, 1)
    if flip:
        S = 1.0 - S
    C = np.tile([0.0005, 0.002, 0.01], (n, 1)) * rng.uniform(0.8, 1.2, size=(n, M))
    S[rng.random(S.shape) < 0.05] = np.nan  # some missing outcomes
    knn = KNNRouter(k=10).fit(X, S, C, model_names=NAMES)
    p = ProductionRouter(knn, ids=[f"s{i}" for i in range(n)], default_lambda=LAM)
    p.budget_table(X[:200], S[:200], C[:200])
    return p


def _queries(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, D)).astype(np.float32)


def _write_parquet(folder: Path, Q: np.ndarray, files: int) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for f, part in enumerate(np.array_split(np.arange(len(Q)), files)):
        pid = [f"q{i:05d}" for i in part]
        ids += pid
        tbl = pa.table({"id": pid, "extra": part.astype(np.int64),
                        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(Q[part].ravel()), D)})
        pq.write_table(tbl, folder / f"in-{f}.parquet")
    return ids


def _hash_embed(texts: list[str]) -> np.ndarray:
    """A deterministic text 'embedder' for tests (no model weights): hashed character trigrams."""
    out = np.zeros((len(texts), D), np.float32)
    for i, t in enumerate(texts):
        for j in range(max(1, len(t) - 2)):
            h = int(hashlib.md5(t[j : j + 3].encode()).hexdigest()[:8], 16)
            out[i, h % D] += 1.0 if (h >> 8) & 1 else -1.0
        out[i, 0] += 0.01
    return out


def _hash_embedder():  # type: ignore[no-untyped-def]
    from knnroute.embed.encoders import CallableEmbedder

    def fn(texts):  # type: ignore[no-untyped-def]  # nested: Ray pickles it by value
        return _hash_embed(list(texts))

    return CallableEmbedder(fn, identity="test-trigram-hash-v1")


def _in_order(df, ids):  # type: ignore[no-untyped-def]
    """The decisions in the order of ``ids`` (each id exactly once): rows are joined by id, as the docs
    advise, since Ray's output files need not follow the input order."""
    assert sorted(df["id"].tolist()) == sorted(ids) and df["id"].is_unique
    return df.set_index("id").loc[list(ids)].reset_index()


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def ray_session() -> Iterator[object]:
    ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed: pip install '.[ray]'")
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024 * 1024,
                 log_to_driver=False)
        started = True
    try:
        yield ray
    finally:
        from ray import serve

        serve.shutdown()  # a no-op when Serve never started
        if started:
            ray.shutdown()


@pytest.fixture(scope="module")
def router_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[ProductionRouter, Path]:
    p = _router()
    path = p.save(tmp_path_factory.mktemp("router") / "r.knnr")
    return p, path


def _check_against_in_process(p: ProductionRouter, Q: np.ndarray, df, lam: float) -> None:  # type: ignore[no-untyped-def]
    """Decisions equal the in-process batch route, predictions and confidence (independent paths)."""
    ref = p.route(Q, lam)  # core batch route (no fallback policy here)
    assert list(df["model"]) == list(ref)
    assert list(df["routed_model"]) == list(ref)
    j = np.asarray([p.model_names.index(m) for m in ref])
    S, C = p.predict(Q)
    rows = np.arange(len(Q))
    np.testing.assert_array_equal(df["predicted_score"].to_numpy(), S[rows, j].astype(np.float64))
    np.testing.assert_array_equal(df["predicted_cost"].to_numpy(), C[rows, j].astype(np.float64))
    conf = p.knn.confidence(Q, lam)
    np.testing.assert_array_equal(df["kth_similarity"].to_numpy(), conf["kth_similarity"].astype(np.float64))
    np.testing.assert_array_equal(df["agreement"].to_numpy(), conf["agreement"].astype(np.float64))
    assert df["fallback"].isna().all()
    assert (df["lambda"] == lam).all()


# ------------------------------------------------------------------------------ batch routing: Ray
def test_ray_batch_routing_matches_in_process(ray_session, router_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Parquet (3 files) -> Ray Data (2 actors, 100-row batches) -> Parquet: the in-process decisions for
    every id; each worker loaded the router file once although it routed several batches."""
    from knnroute.production.batch import read_decisions, route_batch

    p, path = router_file
    Q = _queries(1500)
    ids = _write_parquet(tmp_path / "in", Q, files=3)
    res = route_batch(path, str(tmp_path / "in" / "*.parquet"), tmp_path / "out", lam=LAM, use_ray=True,
                      workers=2, batch_size=100, keep_columns=["id", "extra"], diagnostics=True, progress=False)
    assert res.rows == 1500 and res.engine == "ray" and res.files_in == 3
    df = _in_order(read_decisions(tmp_path / "out"), ids)
    assert list(df["extra"]) == list(range(1500))
    _check_against_in_process(p, Q, df, LAM)
    # 15 batches over at most 2 worker processes, each of which loaded the file exactly once
    pids = set(df["worker_pid"])
    assert 1 <= len(pids) <= 2
    assert (df["router_loads"] == 1).all()

    # the in-process engine writes the same decisions
    loc = route_batch(path, tmp_path / "in", tmp_path / "out-local", lam=LAM, keep_columns=["id", "extra"],
                      progress=False)
    assert loc.engine == "local" and loc.rows == 1500
    dl = read_decisions(tmp_path / "out-local")
    cols = ["id", "extra", "model", "routed_model", "lambda", "predicted_score", "predicted_cost",
            "kth_similarity", "agreement"]
    assert dl[cols].equals(df[cols])


def test_ray_batch_routing_jsonl_budget_fallback_all_models(ray_session, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """JSONL input, a budget (max_cost via the file's table), a fallback policy and per-model columns."""
    import pandas as pd

    from knnroute.production.batch import read_decisions, route_batch

    p = _router(seed=3)
    Qv = _queries(200, seed=7)
    p.calibrate_fallback("best", Qv, lam=LAM, distance_quantile=0.5)  # about half the traffic falls back
    path = p.save(tmp_path / "fb.knnr")
    Q = _queries(300, seed=8)
    (tmp_path / "in").mkdir()
    with open(tmp_path / "in" / "a.jsonl", "w") as fh:
        fh.writelines(json.dumps({"id": f"r{i}", "embedding": [float(x) for x in q]}) + "\n" for i, q in enumerate(Q))
    budget = float(np.median(p.budget.mean_cost))
    route_batch(path, tmp_path / "in" / "a.jsonl", tmp_path / "out", max_cost=budget, use_ray=True, workers=2,
                batch_size=64, all_models=True, progress=False)
    df = _in_order(read_decisions(tmp_path / "out"), [f"r{i}" for i in range(300)])
    ds = [p.decide(q, max_cost=budget) for q in Q]
    assert list(df["model"]) == [d.model for d in ds]
    assert list(df["routed_model"]) == [d.routed_model for d in ds]
    assert [None if pd.isna(f) else f for f in df["fallback"]] == [d.fallback for d in ds]
    assert 0 < sum(d.fallback is not None for d in ds) < 300  # both branches exercised
    assert (df["lambda"] == p.lambda_for_budget(budget).lam).all()
    S, C = p.predict(Q)
    for j, m in enumerate(p.model_names):
        np.testing.assert_array_equal(df[f"score:{m}"].to_numpy(), S[:, j].astype(np.float64))
        np.testing.assert_array_equal(df[f"cost:{m}"].to_numpy(), C[:, j].astype(np.float64))


def test_ray_batch_routing_prompts_are_embedded_in_workers(ray_session, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """CSV of prompts: each worker embeds (the router's embedder identity is checked) and routes; the
    decisions equal in-process ``route_prompts``."""
    import pandas as pd

    from knnroute.production.batch import read_decisions, route_batch

    rng = np.random.default_rng(5)
    words = ["math", "code", "story", "proof", "python", "poem", "sum", "loop", "verse", "lemma"]
    texts = [" ".join(rng.choice(words, size=6)) for _ in range(400)]
    emb = _hash_embedder()
    X = emb.encode(texts, progress=False)
    S = np.stack([[t.count("math") + t.count("proof"), t.count("code") + t.count("loop"), 1.0] for t in texts])
    S = S / S.max()
    C = np.tile([0.001, 0.002, 0.01], (len(texts), 1))
    p = ProductionRouter(KNNRouter(k=8).fit(X, S, C, model_names=NAMES), embedder=emb, default_lambda=20.0)
    path = p.save(tmp_path / "text.knnr")
    queries = [" ".join(rng.choice(words, size=5)) for _ in range(120)]
    pd.DataFrame({"id": range(120), "prompt": queries}).to_csv(tmp_path / "q.csv", index=False)
    route_batch(path, tmp_path / "q.csv", tmp_path / "out", use_ray=True, workers=2, batch_size=32,
                embedder=_hash_embedder(), progress=False)
    df = _in_order(read_decisions(tmp_path / "out"), list(range(120)))
    assert list(df["model"]) == p.route_prompts(queries)
    # a different embedder identity is refused before any routing
    from knnroute.embed.encoders import CallableEmbedder

    with pytest.raises(ValueError, match="embedder mismatch"):
        route_batch(path, tmp_path / "q.csv", tmp_path / "out2",
                    embedder=CallableEmbedder(_hash_embed, identity="other"),
                    progress=False)


# --------------------------------------------------------------------------- batch routing: errors
def test_batch_routing_input_errors(router_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd

    from knnroute.production.batch import resolve_inputs, route_batch

    _, path = router_file
    with pytest.raises(FileNotFoundError, match="no input file matches"):
        route_batch(path, tmp_path / "nothing-*.parquet", tmp_path / "o", progress=False)
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame({"x": [1]}).to_json(tmp_path / "b.jsonl", orient="records", lines=True)
    with pytest.raises(ValueError, match="mix formats"):
        resolve_inputs([tmp_path / "a.csv", tmp_path / "b.jsonl"])
    with pytest.raises(ValueError, match="no 'embedding' or 'prompt' column"):
        route_batch(path, tmp_path / "a.csv", tmp_path / "o", progress=False)
    (tmp_path / "c.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported input format"):
        resolve_inputs(tmp_path / "c.txt")
    pd.DataFrame({"embedding": [json.dumps([1.0, 2.0, 3.0])]}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(ValueError, match="dimension 3, the router has 16"):
        route_batch(path, tmp_path / "d.csv", tmp_path / "o", progress=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        route_batch(path, tmp_path / "d.csv", tmp_path / "full", progress=False)
    with pytest.raises(FileNotFoundError, match="router file"):
        route_batch(tmp_path / "missing.knnr", tmp_path / "d.csv", tmp_path / "o2", progress=False)


def test_route_batch_cli_local(router_file, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    """``knnroute route-batch`` (in process) on CSV embeddings (JSON strings) equals ``route``."""
    import pandas as pd

    from knnroute.cli import main
    from knnroute.production.batch import read_decisions

    p, path = router_file
    Q = _queries(50, seed=11)
    pd.DataFrame({"id": range(50), "embedding": [json.dumps(q.tolist()) for q in Q]}).to_csv(tmp_path / "q.csv",
                                                                                             index=False)
    assert main(["route-batch", "--router", str(path), "--input", str(tmp_path / "q.csv"), "--output",
                 str(tmp_path / "out"), "--lam", str(LAM), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rows"] == 50 and summary["engine"] == "local"
    df = read_decisions(tmp_path / "out")
    assert list(df["model"]) == list(p.route(Q, LAM))
    assert main(["route-batch", "--router", str(path), "--input", str(tmp_path / "none.csv"), "--output",
                 str(tmp_path / "o2")]) == 2


# ----------------------------------------------------------------------------------- evaluation grid
def _is_timing(key: str) -> bool:
    """Wall-clock fields (``fit_seconds``, ``route_us_per_query``, their means/stds...): not reproducible."""
    return "seconds" in key or "_us_" in key or key.startswith("time")


def _strip(x):  # type: ignore[no-untyped-def]
    """``x`` without timing fields, recursively."""
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if not _is_timing(str(k))}
    if isinstance(x, list):
        return [_strip(v) for v in x]
    return "NaN" if isinstance(x, float) and math.isnan(x) else x  # NaN != NaN (e.g. match_cost_share)


def test_eval_on_ray_matches_local(ray_session) -> None:  # type: ignore[no-untyped-def]
    """The grid as Ray tasks: the same records (timings aside), curves and tuning tables as the serial run."""
    from knnroute.commands.eval import load_eval_data
    from knnroute.evaluate.ray_eval import evaluate_ray
    from knnroute.evaluate.runner import evaluate

    data = [ed for ed, _ in load_eval_data("demo", progress=False)]
    routers = ["oracle", "random", "best-single", "single", "knn-10", "knn-100", "knn-tuned"]
    seeds = [0, 1]
    local = evaluate(data, routers, seeds, progress=False)
    remote = evaluate_ray(data, routers, seeds, progress=False)
    assert [_strip(r) for r in remote.records] == [_strip(r) for r in local.records]
    assert list(remote.curves) == list(local.curves)
    for key, cv in local.curves.items():
        assert remote.curves[key].to_dict(points=True) == cv.to_dict(points=True), key
    assert remote.extras == local.extras


def test_eval_cli_ray_json_equals_local(ray_session, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``knnroute eval --ray --json`` writes the local run's JSON (timings and arguments aside)."""
    from knnroute.cli import main

    common = ["eval", "--data", "demo", "--routers", "knn-10,knn-tuned", "--seeds", "2", "--no-progress"]
    assert main([*common, "--json", str(tmp_path / "local.json")]) == 0
    assert main([*common, "--ray", "--json", str(tmp_path / "ray.json")]) == 0
    a = json.loads((tmp_path / "local.json").read_text())
    b = json.loads((tmp_path / "ray.json").read_text())
    for payload in (a, b):
        payload.pop("meta")  # arguments (--ray) and wall-clock times
    assert _strip(a) == _strip(b)


@pytest.mark.realdata
def test_eval_on_ray_matches_local_routerbench(ray_session, real_data: Path) -> None:  # type: ignore[no-untyped-def]
    """The same on a real dataset (RouterBench ARC-C, cached MiniLM embeddings), kNN rows, 2 seeds."""
    from knnroute.data import load_dataset
    from knnroute.embed import embed_dataset
    from knnroute.evaluate.ray_eval import evaluate_ray
    from knnroute.evaluate.runner import EvalData, evaluate

    # the same dataset and embedding call as tests/test_baselines.py, so a cold cache embeds it once
    ds = {d.name: d for d in load_dataset(real_data / "routerbench-0shot-subset")}["arc_challenge"]
    ed = EvalData.from_dataset(embed_dataset(ds, progress=False))
    routers = ["oracle", "best-single", "knn-10", "knn-tuned"]
    local = evaluate([ed], routers, [0, 1], progress=False)
    remote = evaluate_ray([ed], routers, [0, 1], progress=False)
    assert [_strip(r) for r in remote.records] == [_strip(r) for r in local.records]


# ------------------------------------------------------------------------------------------ serving
def _save_as(p: ProductionRouter, path: Path) -> str:
    """Save atomically over ``path``; return the payload digest recorded in the file."""
    from knnroute.production import read_metadata

    p.save(path)
    return str(read_metadata(path)["payload_sha256"])


def _wait(pred, timeout: float = 30.0, step: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not met in time")
        time.sleep(step)


def test_service_reload_admin_endpoint_and_watcher(tmp_path: Path) -> None:
    """Admin reload (token), failed reload keeps the old router, file watching; answers follow the file."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from knnroute.service.app import create_app
    from knnroute.service.slot import RouterSlot

    a, b = _router(seed=0), _router(seed=0, flip=True)
    Q = _queries(40, seed=21)
    ref_a, ref_b = list(a.route(Q, LAM)), list(b.route(Q, LAM))
    assert ref_a != ref_b
    path = tmp_path / "live.knnr"
    dig_a = _save_as(a, path)
    slot = RouterSlot.from_path(path, load_embedder=False)
    app = create_app(slot, admin_token="s3cret")

    def models(c: TestClient) -> list[str]:
        r = c.post("/route/batch", json={"items": [{"embedding": q.tolist(), "lambda": LAM} for q in Q]})
        assert r.status_code == 200, r.text
        return [x["model"] for x in r.json()["results"]]

    with TestClient(app) as c:
        h = c.get("/health", headers={"Authorization": "Bearer s3cret"}).json()
        assert h["router_generation"] == 1 and h["router_sha256"] == dig_a and h["source"] == str(path)
        assert models(c) == ref_a
        dig_b = _save_as(b, path)
        assert models(c) == ref_a  # no reload yet
        assert c.post("/admin/reload").status_code == 403
        assert c.post("/admin/reload", headers={"Authorization": "Bearer nope"}).status_code == 403
        r = c.post("/admin/reload", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200 and r.json()["router_generation"] == 2 and r.json()["router_sha256"] == dig_b
        assert models(c) == ref_b
        # a corrupt file: the reload fails, generation 2 keeps serving
        raw = bytearray(path.read_bytes())
        raw[-10] ^= 0xFF
        path.write_bytes(bytes(raw))
        r = c.post("/admin/reload", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 500 and "still serving generation 2" in r.json()["detail"]
        assert models(c) == ref_b
        assert c.get("/health", headers={"Authorization": "Bearer s3cret"}).json()["last_reload_error"]
        # the watcher picks up the next (good) file by itself
        slot.watch(0.05)
        try:
            _save_as(a, path)
            _wait(lambda: c.get("/health").json()["router_generation"] == 3)
            assert c.get("/health").json()["router_sha256"] == dig_a
            assert models(c) == ref_a
        finally:
            slot.stop()
    # an in-memory router has nothing to reload
    with TestClient(create_app(a, load_embedder=False, admin_token="t")) as c:
        assert c.post("/admin/reload", headers={"Authorization": "Bearer t"}).status_code == 409


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ray_serve_replicas_receive_router_updates(ray_session, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Two Ray Serve replicas on one router file: a new file reaches both (file watcher), and a new
    ``user_config`` naming another file reaches both (reconfigure); routes follow."""
    pytest.importorskip("fastapi")
    import httpx
    from ray import serve

    from knnroute.service.ray_serve import serve_deployment

    a, b, c_ = _router(seed=0), _router(seed=0, flip=True), _router(seed=4)
    Q = _queries(20, seed=31)
    path = tmp_path / "live.knnr"
    dig_a = _save_as(a, path)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    opts = {"num_replicas": 2, "watch_interval": 0.2, "load_embedder": False, "num_cpus_per_replica": 0.25,
            "admin_token": "t"}  # /health shows the pid to an authenticated caller
    serve.run(serve_deployment(path, **opts, user_config={"generation": 1}), name="knnroute", route_prefix="/")
    url = f"http://127.0.0.1:{port}"

    def replicas(client: httpx.Client, want: str, timeout: float = 60.0) -> dict[int, str]:
        """Poll /health until two replicas (pids) have been seen and every one reports ``want``."""
        seen: dict[int, str] = {}
        t0 = time.monotonic()
        while not (len(seen) == 2 and all(d == want for d in seen.values())):
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"replicas did not converge: {seen}")
            h = client.get("/health", headers={"Authorization": "Bearer t"}).json()
            seen[h["pid"]] = h["router_sha256"]
            time.sleep(0.02)
        return seen

    def routed(client: httpx.Client) -> list[str]:
        return [client.post("/route", json={"embedding": q.tolist(), "lambda": LAM}).json()["model"] for q in Q]

    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            first = replicas(client, dig_a)
            assert routed(client) == list(a.route(Q, LAM))
            dig_b = _save_as(b, path)  # atomic replace: each replica's watcher reloads it
            second = replicas(client, dig_b)
            assert set(second) == set(first)  # the same replicas, reloaded in place
            assert routed(client) == list(b.route(Q, LAM))
            other = tmp_path / "other.knnr"
            dig_c = _save_as(c_, other)
            serve.run(serve_deployment(path, **opts, user_config={"generation": 2, "router_path": str(other)}),
                      name="knnroute", route_prefix="/")
            replicas(client, dig_c)
            assert routed(client) == list(c_.route(Q, LAM))
    finally:
        serve.delete("knnroute")


def test_distributed_import_is_lazy() -> None:
    """``import knnroute`` and the Ray-using modules do not import ray."""
    import subprocess
    import sys

    code = ("import sys, knnroute, knnroute.production.batch, knnroute.evaluate.ray_eval, "
            "knnroute.service.ray_serve; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
