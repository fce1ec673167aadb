"""Issue 28: feedback throughput of one gateway process, SQLite and PostgreSQL, with and without group commit.

The answered requests' contexts are written straight into the store first (what the chat path would have
left there), then ``bench/openloop.py`` (its own process) POSTs ``/v1/feedback`` for them at fixed arrival
rates (acknowledged per second: 200s answered within the rate's window); each 200 means the feedback is
durable (committed: SQLite WAL with synchronous=FULL, PostgreSQL with fsync on).
Reported per store x group commit x rate: acknowledged feedbacks per second, p50/p99 latency.

    python -m bench.feedback_throughput --out docs/gateway-feedback-throughput.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.gateway_replicas import ROOT, Replica, _cpu, _dim, env, make_router, upstreams, write_config


def _contexts(store: str, dim: int, n: int, tag: str) -> list[str]:
    from knnroute.gateway.shared import open_store
    from knnroute.gateway.store import Context

    rng = np.random.default_rng(0)
    st = open_store(store, dim)
    rids = [f"kr-{tag}-{i}" for i in range(n)]
    try:
        now = time.time()
        for i in range(0, n, 1000):
            chunk = rids[i:i + 1000]
            st.commit([(r, Context(rng.standard_normal(dim).astype(np.float32), "small", 1e-5, "-", now))
                       for r in chunk], [])
    finally:
        st.close()
    return rids


def _openloop(url: str, bodies: Path, rate: float, seconds: float) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.openloop", "--url", url, "--bodies", str(bodies), "--rate",
                          str(rate), "--seconds", str(seconds), "--timeout", "5"], capture_output=True, text=True,
                         env=env(), cwd=ROOT, check=True)
    return dict(json.loads(out.stdout))


def measure(store: str, folder: Path, ups: dict[str, str], group: bool, rates: list[float],
            seconds: float) -> list[dict[str, Any]]:
    from tests.servers import free_port

    folder.mkdir(parents=True, exist_ok=True)
    router = folder / "router.knnr"
    make_router(router)
    dim = _dim(router)
    cfg = write_config(folder / "gw.toml", router, ups, store, extra=f"group_commit = {str(group).lower()}")
    rep = Replica(cfg, free_port(), folder / "gw.log")
    rows = []
    rep.start()
    try:
        for rate in rates:
            tag = f"{int(group)}-{int(rate)}"
            rids = _contexts(store, dim, int(rate * seconds), tag)
            bodies = folder / f"bodies-{tag}.jsonl"
            bodies.write_text("".join(json.dumps({"request_id": r, "score": 0.5}) + "\n" for r in rids))
            r = _openloop(rep.url + "/v1/feedback", bodies, rate, seconds)
            lat = r["latency_ms"].get("200", {})
            rows.append({"store": store.split(":", 1)[0], "group_commit": group, "offered_per_s": rate,
                         "acknowledged_per_s": round(r["answered_in_window_rps"], 1), "ok": r["ok"],
                         "status": r["status"],
                         "timeouts": r["timeout"], "p50_ms": round(lat.get("p50", float("nan")), 2),
                         "p99_ms": round(lat.get("p99", float("nan")), 2)})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        rep.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rates", default="100,300,1000,2000")
    ap.add_argument("--stores", default="sqlite,postgres")
    args = ap.parse_args(argv)
    rates = [float(x) for x in args.rates.split(",")]
    load = os.getloadavg()
    rows: list[dict[str, Any]] = []
    with upstreams() as ups, tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as es:
        for kind in args.stores.split(","):
            for group in (True, False):
                folder = Path(tmp) / f"{kind}-{int(group)}"
                if kind == "sqlite":
                    url = f"sqlite:///{folder}/feedback.db"
                else:
                    from tests.pg import create_database, postgres_server

                    if "pg" not in locals():
                        pg = es.enter_context(postgres_server())
                    url = create_database(pg)
                rows.extend(measure(url, folder, ups, group, rates, args.seconds))
    out = {"host": {"cpu": _cpu(), "cores": os.cpu_count(), "load_before": load, "load_after": os.getloadavg()},
           "seconds_per_rate": args.seconds, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
