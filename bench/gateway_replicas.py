"""Issue 28: gateway replicas on a shared feedback store, under ``kill -9``.

Three ``knnroute gateway`` processes (separate ports) on one store (SQLite, or PostgreSQL with a router
file -- snapshot -- per replica, as on three machines) behind a round-robin client: each routed request
goes to replica i, its feedback to replica i+1 (one that did not answer it). A killer sends ``kill -9`` to
a random replica every ``kill_every`` seconds and starts it again at once. After the flood: every
acknowledged feedback must be in the store, every replica's ``/health`` size must equal the base rows plus
the store's records (checked every 50 ms: the time until all are equal is reported), and the replicas'
``/route`` decisions on test prompts must be identical.

    python -m bench.gateway_replicas --out docs/gateway-replicas.json            # SQLite and PostgreSQL

The test ``tests/test_gateway_replicas.py::test_kill_9_replicas`` runs :func:`kill_test` on both stores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["small", "coder", "big"]
TOPICS = [["tell me a joke about {}", "write a short poem on {}", "say something nice about {}"],
          ["write a python function that sorts {}", "fix this javascript bug in the {} parser"],
          ["prove that the sum of two {} numbers is even", "integrate x squared times {} from zero to one"]]
WORDS = ["cats", "trees", "rivers", "trains", "clouds", "apples", "stars", "bridges"]


def prompts() -> tuple[list[str], np.ndarray]:
    out, topic = [], []
    for t, group in enumerate(TOPICS):
        for tpl in group:
            for w in WORDS:
                out.append(tpl.format(w))
                topic.append(t)
    return out, np.asarray(topic)


def make_router(path: Path) -> int:
    """A WordLlama router of three models over the prompts above (shrinkage 10); returns its rows."""
    from knnroute.embed import get_embedder
    from knnroute.production import ProductionRouter
    from knnroute.routers.knn import KNNRouter

    ps, topic = prompts()
    X = get_embedder("wordllama").encode(ps)
    S = np.column_stack([topic == 0, np.where(topic == 1, 1.0, 0.2), np.full(len(topic), 0.7)]).astype(float)
    C = np.tile([1e-5, 1e-4, 1e-3], (len(topic), 1))
    ProductionRouter(KNNRouter(k=5, shrinkage=10).fit(X, S, C, model_names=NAMES), embedder="wordllama").save(path)
    return len(ps)


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT),
                                                         os.environ.get("PYTHONPATH", "")]),
            "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", "FAKE_UPSTREAM_KEY": "sk-up"}


def write_config(path: Path, router: Path, upstreams: dict[str, str], store: str, extra: str = "",
                 limits: str = "") -> Path:
    ups = "".join(f'[upstreams."{m}"]\nbase_url = "{u}/v1"\napi_key_env = "FAKE_UPSTREAM_KEY"\nmax_retries = 0\n'
                  for m, u in upstreams.items())
    path.write_text(f'[router]\nfile = "{router}"\nlambda = 0.0\n[server]\nmax_loop_lag_ms = 0\n'
                    f'[feedback]\nstore = "{store}"\nsave_interval_s = 2\npoll_s = 0.05\n{extra}\n'
                    f"[limits]\n{limits}\n{ups}")
    return path


class Replica:
    """One ``knnroute gateway`` process on a fixed port; :meth:`kill` is ``kill -9``, :meth:`start` again."""

    def __init__(self, config: Path, port: int, log: Path, workers: int = 1) -> None:
        self.config, self.port, self.log, self.workers = config, port, log, workers
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "knnroute", "gateway", "--config", str(self.config),
                                          "--port", str(self.port), "--log-level", "warning",
                                          "--workers", str(self.workers)],
                                         stdout=fh, stderr=subprocess.STDOUT, env=env(), start_new_session=True)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"replica on {self.port} exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"replica on {self.port} did not start in {timeout} s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the process and its workers
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def size(self) -> int:
        return int(httpx.get(self.url + "/health", timeout=5).json()["size"])


@contextlib.contextmanager
def upstreams() -> Iterator[dict[str, str]]:
    from tests.fake_upstream import make_upstream, thread_server

    with contextlib.ExitStack() as es:
        yield {m: es.enter_context(thread_server(make_upstream(m)[0])) for m in NAMES}


def kill_test(store: str, folder: Path, ups: dict[str, str], *, replicas: int = 3, seconds: float = 10.0,
              kill_every: float = 3.0, senders: int = 6, separate_snapshots: bool = False,
              seed: int = 0) -> dict[str, Any]:
    """Run the flood with kills; returns the counts and checks (see the module docstring)."""
    from knnroute.gateway.shared import open_store

    folder.mkdir(parents=True, exist_ok=True)
    base_router = folder / "router.knnr"
    base = make_router(base_router)
    from tests.servers import free_port

    reps = []
    for i in range(replicas):
        router = base_router
        if separate_snapshots:
            router = folder / f"router-{i}.knnr"
            router.write_bytes(base_router.read_bytes())
        cfg = write_config(folder / f"gateway-{i}.toml", router, ups, store)
        reps.append(Replica(cfg, free_port(), folder / f"replica-{i}.log"))
    ps, _ = prompts()
    rng = random.Random(seed)
    acked: list[str] = []
    counts = {"chat_ok": 0, "chat_err": 0, "fb_ok": 0, "fb_err": 0, "kills": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def sender(w: int) -> None:
        r = random.Random(seed * 100 + w)
        with httpx.Client(timeout=10) as c:
            i = w
            while not stop.is_set():
                i += 1
                a, b = reps[i % replicas], reps[(i + 1) % replicas]
                try:
                    resp = c.post(a.url + "/v1/chat/completions", json={
                        "model": "knnroute", "messages": [{"role": "user", "content": r.choice(ps)}]})
                    rid = resp.headers.get("x-knnroute-request-id") if resp.status_code == 200 else None
                except httpx.HTTPError:
                    rid = None
                with lock:
                    counts["chat_ok" if rid else "chat_err"] += 1
                if rid is None:
                    time.sleep(0.01)
                    continue
                try:
                    fb = c.post(b.url + "/v1/feedback", json={"request_id": rid, "score": r.random()})
                    ok = fb.status_code == 200
                except httpx.HTTPError:
                    ok = False
                with lock:
                    counts["fb_ok" if ok else "fb_err"] += 1
                    if ok:
                        acked.append(rid)

    try:
        for rep in reps:
            rep.start()
        threads = [threading.Thread(target=sender, args=(w,), daemon=True) for w in range(senders)]
        for t in threads:
            t.start()
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            time.sleep(min(kill_every, max(0.0, t_end - time.monotonic())))
            if time.monotonic() >= t_end:
                break
            victim = rng.choice(reps)
            victim.kill()
            counts["kills"] += 1
            victim.start()
        stop.set()
        for t in threads:
            t.join(30)
        flood_end = time.monotonic()
        st = open_store(store, _dim(base_router))
        try:
            recs = st.records_after(0, limit=10_000_000)
        finally:
            st.close()
        in_store = {r.request_id for r in recs}
        lost = sorted(set(acked) - in_store)
        want = base + len(recs)
        converged_s = None
        sizes: list[int] = []
        while time.monotonic() - flood_end < 10:
            sizes = [rep.size() for rep in reps]
            if all(s == want for s in sizes):
                converged_s = time.monotonic() - flood_end
                break
            time.sleep(0.05)
        test = [p + " please" for p in ps[::4]]
        decisions = []
        for rep in reps:
            got = httpx.post(rep.url + "/route/batch", json={"items": [{"prompt": p, "lambda": 0.0} for p in test]},
                             timeout=30).json()
            decisions.append([(d["model"], d["predicted"]) for d in got["results"]])
        return {"store": store.split(":", 1)[0], "replicas": replicas, "seconds": seconds, "kills": counts["kills"],
                **{k: v for k, v in counts.items() if k != "kills"}, "acknowledged": len(acked),
                "in_store": len(recs), "lost": len(lost), "sizes": sizes, "want_size": want,
                "converged_s": converged_s, "decisions_identical": all(d == decisions[0] for d in decisions),
                "test_prompts": len(test)}
    finally:
        stop.set()
        for rep in reps:
            rep.stop()


def _dim(router: Path) -> int:
    from knnroute.service.slot import RouterSlot

    return RouterSlot.from_path(router, load_embedder=False).router.dim


def main(argv: list[str] | None = None) -> int:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--kill-every", type=float, default=3.0)
    ap.add_argument("--senders", type=int, default=8)
    ap.add_argument("--stores", default="sqlite,postgres")
    args = ap.parse_args(argv)
    results = []
    with upstreams() as ups, tempfile.TemporaryDirectory() as tmp:
        for kind in args.stores.split(","):
            folder = Path(tmp) / kind
            if kind == "sqlite":
                results.append(kill_test(f"sqlite:///{folder}/feedback.db", folder, ups, seconds=args.seconds,
                                         kill_every=args.kill_every, senders=args.senders))
            else:
                from tests.pg import create_database, postgres_server

                with postgres_server() as url:
                    results.append(kill_test(create_database(url), folder, ups, seconds=args.seconds,
                                             kill_every=args.kill_every, senders=args.senders,
                                             separate_snapshots=True))
            print(json.dumps(results[-1]), flush=True)
    out = {"host": {"cpu": _cpu(), "cores": os.cpu_count(), "load_before": os.getloadavg(),
                    "python": platform.python_version()}, "kill_test": results}
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


def _cpu() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    raise SystemExit(main())
