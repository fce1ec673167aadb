"""Issue 17: one test per defect found by hostile traffic and changing files (``test_defectNN_*``).

Each test reproduces the attack as it was reported (real loopback sockets, real files, real processes
where the defect killed one) and checks the service answers cleanly instead. Servers listen on 127.0.0.1
only and every loop is bounded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from knnroute.production import ProductionRouter
from knnroute.routers.knn import KNNRouter
from tests.test_serve import process_server, thread_server

D, M = 16, 3
NAMES = ["cheap", "mid", "best"]


def _router(n: int = 400, d: int = D, seed: int = 0) -> ProductionRouter:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    S = np.column_stack([X[:, 0] > 0.5, X[:, 0] > 0, np.ones(n)]).astype(np.float64)
    C = np.tile([1e-4, 1e-3, 1e-2], (n, 1))
    return ProductionRouter(KNNRouter(k=10).fit(X, S, C, model_names=NAMES), default_lambda=20.0)


@pytest.fixture(scope="module")
def big_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two different router files of ~6 MB (large enough that a rewrite overlaps a load)."""
    out = tmp_path_factory.mktemp("big")
    a, b = out / "a.knnr", out / "b.knnr"
    _router(20_000, 64, 1).save(a)
    _router(20_000, 64, 2).save(b)
    return a, b


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    from knnroute.service.app import create_app

    app = create_app(_router(), max_body_bytes=1 << 20, max_batch=64)
    with thread_server(app) as url:
        yield url


# ------------------------------------------------------------------ 1: SIGBUS on a file rewritten in place
def test_defect01_sigbus_on_rewrite(big_files: tuple[Path, Path], tmp_path: Path) -> None:
    """``knnroute.load`` while another thread truncates and rewrites the file in place: the load either
    succeeds or raises RouterFileError, and the process lives (it died with -7, SIGBUS, on a memory map)."""
    a, b = big_files
    target = tmp_path / "s.knnr"
    shutil.copyfile(a, target)
    script = textwrap.dedent(f"""
        import shutil, threading, time
        import knnroute
        from knnroute.production.persist import RouterFileError
        stop = threading.Event()
        def writer():
            i = 0
            while not stop.is_set():
                with open({str(target)!r}, "r+b") as out:  # in place: truncate, then write
                    out.truncate(0)
                    with open([{str(a)!r}, {str(b)!r}][i % 2], "rb") as src:
                        shutil.copyfileobj(src, out, 1 << 16)
                i += 1
        th = threading.Thread(target=writer, daemon=True)
        th.start()
        ok = bad = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 4 and ok + bad < 300:
            try:
                knnroute.load({str(target)!r})
                ok += 1
            except (RouterFileError, FileNotFoundError):
                bad += 1
        stop.set()
        th.join(5)
        print("loads", ok, "refused", bad)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 0, f"loader died (exit {r.returncode}): {r.stderr[-2000:]}"
    assert "loads" in r.stdout


def test_defect01_server_survives_copies_over_watched_file(big_files: tuple[Path, Path], tmp_path: Path) -> None:
    """The reported repro, shortened: ``serve --watch`` while ``cp`` rewrites the file in place 100 times."""
    a, b = big_files
    target = tmp_path / "s.knnr"
    shutil.copyfile(a, target)
    with process_server(target, "--watch", "0.05", "--no-embedder", "--admin-token", "t") as url:
        errors = 0
        with httpx.Client(base_url=url, timeout=30) as c:
            for i in range(100):
                subprocess.run(["cp", str(b if i % 2 == 0 else a), str(target)], check=True, timeout=30)
                if i % 10 == 0:
                    c.post("/admin/reload", headers={"Authorization": "Bearer t"})
                q = np.ones(64, dtype=np.float32).tolist()
                errors += c.post("/route", json={"embedding": q}).status_code != 200
            assert c.get("/health").status_code == 200
        assert errors == 0


def test_defect01_changing_file_is_refused_and_old_router_kept(tmp_path: Path) -> None:
    """A file that changes on every read is refused with a message saying why; the slot keeps serving."""
    from knnroute.production.persist import RouterFileError
    from knnroute.service import slot as slot_mod

    path = tmp_path / "r.knnr"
    _router().save(path)
    s = slot_mod.RouterSlot.from_path(path, load_embedder=False)
    calls = [0]
    real = slot_mod._file_signature

    def moving(p: str) -> tuple[int, int, int, int]:
        calls[0] += 1
        return (*real(p)[:3], calls[0])

    slot_mod._file_signature = moving  # type: ignore[assignment]
    try:
        with pytest.raises(RouterFileError, match="kept changing"):
            s.reload()
    finally:
        slot_mod._file_signature = real  # type: ignore[assignment]
    assert s.state.generation == 1 and s.last_error is not None and "kept changing" in s.last_error
