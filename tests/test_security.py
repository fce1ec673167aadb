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


# ------------------------------------------------------------------ 2: a 1 MiB batch of empty items
def _hostile_batch(limit: int = 1 << 20) -> bytes:
    n = (limit - len(b'{"items":[]}')) // 3
    return b'{"items":[' + b",".join([b"{}"] * n) + b"]}"


def test_defect02_hostile_batch_refused_before_item_validation(app_url: str) -> None:
    """349,521 empty items in 1 MiB: refused by the item count with one short line (was: every item
    validated on the event loop, 24 s and a 41 MB error body)."""
    body = _hostile_batch()
    assert len(body) <= 1 << 20
    r = httpx.post(app_url + "/route/batch", content=body, headers={"content-type": "application/json"},
                   timeout=60)
    assert r.status_code == 422 and "limit is 64" in r.json()["detail"]
    assert len(r.content) < 200
    assert httpx.get(app_url + "/health", timeout=10).status_code == 200


def test_defect02_huge_embedding_refused_by_length(app_url: str) -> None:
    """An embedding of 250k empty strings: refused by its length before any value is validated."""
    body = b'{"embedding":[' + b",".join([b'""'] * 250_000) + b"]}"
    r = httpx.post(app_url + "/route", content=body, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 422 and "expects 16" in r.json()["detail"]
    assert len(r.content) < 200


def test_defect02_error_bodies_are_truncated(app_url: str) -> None:
    """64 items with 16 bad values each: at most ten errors come back, then a count of the rest."""
    items = [{"embedding": ["x"] * D} for _ in range(64)]
    r = httpx.post(app_url + "/route/batch", json={"items": items}, timeout=30)
    detail = r.json()["detail"]
    assert r.status_code == 422 and len(detail) == 11 and "more errors" in detail[-1]["msg"]


# ------------------------------------------------------------------ 9: types coerced instead of rejected
@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"lambda": "5"}, "valid number"),
        ({"lambda": True}, "valid number"),
        ({"lambda": -1.0}, "greater than or equal to 0"),
        ({"max_cost": "0.1"}, "valid number"),
    ],
)
def test_defect09_strict_types_and_negative_lambda(app_url: str, extra: dict, needle: str) -> None:  # type: ignore[type-arg]
    q = np.ones(D).tolist()
    r = httpx.post(app_url + "/route", json={"embedding": q, **extra}, timeout=10)
    assert r.status_code == 422 and needle in r.text


@pytest.mark.parametrize("bad", [True, "0.5", None])
def test_defect09_embedding_values_must_be_numbers(app_url: str, bad: object) -> None:
    q: list[object] = np.ones(D).tolist()
    q[3] = bad
    r = httpx.post(app_url + "/route", json={"embedding": q}, timeout=10)
    assert r.status_code == 422 and "valid number" in r.text


def test_defect09_lowercase_bearer_scheme_accepted(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from knnroute.service.app import create_app
    from knnroute.service.slot import RouterSlot

    path = tmp_path / "r.knnr"
    _router().save(path)
    app = create_app(RouterSlot.from_path(path, load_embedder=False), admin_token="s3cret")
    with TestClient(app) as c:
        for scheme in ("Bearer", "bearer", "BEARER"):
            r = c.post("/admin/reload", headers={"Authorization": f"{scheme} s3cret"})
            assert r.status_code == 200, (scheme, r.text)
        assert c.post("/admin/reload", headers={"Authorization": "Basic s3cret"}).status_code == 403


# ------------------------------------------------------------------ 12: open reload and introspection
def test_defect12_admin_off_and_health_hides_internals_without_token(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from knnroute.service.app import create_app
    from knnroute.service.slot import RouterSlot

    path = tmp_path / "secret-name.knnr"
    _router().save(path)
    with TestClient(create_app(RouterSlot.from_path(path, load_embedder=False))) as c:
        r = c.post("/admin/reload")
        assert r.status_code == 403 and "--admin-token" in r.json()["detail"]
        h = c.get("/health").json()
        assert h["status"] == "ok" and h["dim"] == D
        assert not {"pid", "source", "last_reload_error", "watch_interval"} & set(h)
        assert "secret-name" not in c.get("/health").text
    with TestClient(create_app(RouterSlot.from_path(path, load_embedder=False), admin_token="t")) as c:
        assert "pid" not in c.get("/health").json()
        assert "pid" not in c.get("/health", headers={"Authorization": "Bearer wrong"}).json()
        h = c.get("/health", headers={"Authorization": "Bearer t"}).json()
        assert h["pid"] == os.getpid() and h["source"] == str(path)


# ------------------------------------------------------------------ 10: abandoned bodies counted as 500
def test_defect10_abandoned_body_is_499_not_500(app_url: str) -> None:
    import socket

    def metric(key: str) -> float:
        for line in httpx.get(app_url + "/metrics", timeout=10).text.splitlines():
            if line.startswith(key + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    k500 = 'knnroute_requests_total{endpoint="/route",method="POST",status="500"}'
    k499 = 'knnroute_requests_total{endpoint="/route",method="POST",status="499"}'
    before500, before499 = metric(k500), metric(k499)
    host, port = app_url.removeprefix("http://").split(":")
    for _ in range(2):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"POST /route HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{\"embedding\": [")
    t0 = time.monotonic()
    while metric(k499) < before499 + 2 and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    assert metric(k499) == before499 + 2
    assert metric(k500) == before500


# ------------------------------------------------------------------ 5 and 6: the image-path resolver
def test_defect05_nul_byte_in_image_path_is_422(tmp_path: Path) -> None:
    from knnroute.service.guard import RequestError, resolve_images

    root = tmp_path / "images"
    root.mkdir()
    with pytest.raises(RequestError) as e:
        resolve_images(["cat\0.png"], str(root))
    assert e.value.status == 422 and "image 0" in str(e.value.detail)


def test_defect06_no_file_existence_oracle(tmp_path: Path) -> None:
    """A path outside the image folder gets the same answer whether the file exists or not."""
    from knnroute.service.guard import RequestError, resolve_images

    root = tmp_path / "images"
    root.mkdir()
    (tmp_path / "exists.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 64)
    answers = []
    for name in ("../exists.png", "../missing.png", str(tmp_path / "exists.png"), str(tmp_path / "missing.png")):
        with pytest.raises(RequestError) as e:
            resolve_images([name], str(root))
        answers.append((e.value.status, e.value.detail))
    assert len(set(answers)) == 1 and answers[0][0] == 422


# ------------------------------------------------------------------ 4: pickles run code
class _Payload:
    """Unpickling this touches a marker file: the stand-in for an attacker's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


def test_defect04_pickle_refused_without_allow_pickle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pickle

    from knnroute.cli import main

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(_Payload(marker)))
    rc = main(["eval", "--data", str(evil), "--no-progress", "--seeds", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and not marker.exists()
    assert "--allow-pickle" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_defect04_convert_needs_the_flag_and_writes_parquet(tmp_path: Path) -> None:
    import pandas as pd

    from knnroute.cli import main

    df = pd.DataFrame({"prompt": ["a", "b"], "m1": [1.0, 0.0], "m1|total_cost": [1e-4, 2e-4],
                       "m1|model_response": [["x"], ["y"]]})
    src, dst = tmp_path / "rb.pkl", tmp_path / "rb.parquet"
    df.to_pickle(src)
    with pytest.raises(SystemExit):
        main(["convert", str(src), str(dst)])  # argparse: --allow-pickle is required
    assert not dst.exists()
    assert main(["convert", "--allow-pickle", str(src), str(dst)]) == 0
    back = pd.read_parquet(dst)
    assert list(back["m1"]) == [1.0, 0.0] and list(back["m1|model_response"]) == ['["x"]', '["y"]']


# ------------------------------------------------------------------ 11: tracebacks from the CLI
def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    from knnroute.cli import main

    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


def test_defect11_one_prompt_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "one.csv"
    f.write_text("prompt_id,model,score,cost,prompt\np1,a,1,0.1,hello\np1,b,0,0.01,hello\n")
    _one_line_error(capsys, ["eval", "--data", str(f), "--no-progress", "--seeds", "1"], "knnroute eval: error:")


def test_defect11_deeply_nested_jsonl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "deep.jsonl"
    f.write_text('{"prompt_id": "p1", "model": "a", "score": 1}\n' + '{"a":' * 200_000 + "1" + "}" * 200_000 + "\n")
    _one_line_error(capsys, ["eval", "--data", str(f), "--no-progress"], str(f), "line 2")


def test_defect11_bad_jsonl_line_names_file_and_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt_id": "p1", "model": "a", "score": 1}\n{"prompt_id": "p2", "model": \n')
    _one_line_error(capsys, ["eval", "--data", str(f), "--no-progress"], str(f), "line 2")


def test_defect11_non_utf8_csv_names_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "latin1.csv"
    f.write_bytes("prompt_id,model,score,prompt\np1,a,1,caf\xe9\n".encode("latin-1"))
    _one_line_error(capsys, ["eval", "--data", str(f), "--no-progress"], str(f), "UTF-8")


def test_defect11_overlong_line_refused_before_reading(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from knnroute.data import tables

    monkeypatch.setattr(tables, "MAX_LINE_BYTES", 1000)
    f = tmp_path / "long.jsonl"
    f.write_text('{"prompt_id": "p1", "model": "a", "score": 1}\n' + '{"prompt": "' + "x" * 5000 + '"}\n')
    _one_line_error(capsys, ["eval", "--data", str(f), "--no-progress"], str(f), "line 2 is longer")


def test_defect11_memory_error_is_one_line(capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from knnroute.commands import eval as eval_cmd

    def boom(args: object) -> int:
        raise MemoryError

    monkeypatch.setattr(eval_cmd, "run", boom)
    _one_line_error(capsys, ["eval"], "out of memory")


# ------------------------------------------------------------------ 3: no token cap in the static embedder
def test_defect03_static_embedder_caps_characters_and_tokens() -> None:
    """A 200,000-emoji prompt (800k byte-fallback tokens, an 819 MB gather) is cut to MAX_CHARS
    characters and MAX_TOKENS tokens before pooling; shorter prompts are untouched."""
    pytest.importorskip("wordllama")
    from knnroute.embed import get_embedder
    from knnroute.embed.static import MAX_CHARS, MAX_TOKENS

    e = get_embedder("wordllama")
    hostile = "\U0001f600" * 200_000
    assert len(e.token_ids(hostile)) == MAX_TOKENS
    v = e.encode_one(hostile)
    assert v.shape == (e.dim,) and np.isfinite(v).all()
    long_text = "the cat sat on the mat " * 4000  # 92k characters
    np.testing.assert_array_equal(e.encode_one(long_text), e.encode_one(long_text[:MAX_CHARS]))
    short = "what is the capital of France?"
    assert len(e.token_ids(short)) < 20


# ------------------------------------------------------------------ 8: router files with impossible values
@pytest.mark.parametrize(
    ("array", "value", "needle"),
    [("scores", 1e30, "scores must lie in [0, 1]"), ("scores", -0.5, "scores must lie in [0, 1]"),
     ("costs", -1.0, "costs must be finite and >= 0"), ("costs", np.inf, "costs must be finite")],
)
@pytest.mark.parametrize("verify", [True, False])
def test_defect08_impossible_values_refused_verified_or_not(tmp_path: Path, array: str, value: float, needle: str,
                                                            verify: bool) -> None:
    """A file re-signed with a score of 1e30 (it routed with a predicted score of 2.7e26) is refused at
    load, with or without the payload check."""
    import knnroute
    from knnroute.production.persist import RouterFileError, write_state

    state = _router().state()
    state[array] = np.array(state[array], dtype=np.float32, copy=True)
    state[array][5, 1] = value
    path = tmp_path / "bad.knnr"
    write_state(state, path)  # a correctly signed file: the digest matches
    with pytest.raises(RouterFileError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        knnroute.load(path, verify=verify)


# ------------------------------------------------------------------ 7: no request read timeout
def _closed_by_server(s: object, deadline: float) -> bool:
    import socket

    assert isinstance(s, socket.socket)
    s.settimeout(max(0.05, deadline - time.monotonic()))
    try:
        while True:
            data = s.recv(4096)
            if not data:
                return True  # EOF: the server closed it
            if b"408" in data.split(b"\r\n", 1)[0]:
                return True
    except (TimeoutError, ConnectionResetError):
        return False if time.monotonic() >= deadline else True


def test_defect07_slowloris_connections_are_closed(tmp_path: Path) -> None:
    """60 connections trickling a request head, and 20 trickling a body: all closed (or answered 408)
    within the 1 s read timeout plus slack, and /health answers meanwhile (they were held 20 s+)."""
    import socket

    path = tmp_path / "r.knnr"
    _router().save(path)
    with process_server(path, "--no-embedder", "--read-timeout", "1") as url:
        host, port = url.removeprefix("http://").split(":")
        heads, bodies = [], []
        for _ in range(60):
            s = socket.create_connection((host, int(port)), timeout=5)
            s.sendall(b"POST /route HTTP/1.1\r\nHost: x\r\n")
            heads.append(s)
        for _ in range(20):
            s = socket.create_connection((host, int(port)), timeout=5)
            s.sendall(b"POST /route HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100000\r\n\r\n{")
            bodies.append(s)
        for _ in range(3):  # trickle: one byte each, which must not extend the deadline
            time.sleep(0.3)
            for s in heads:
                try:
                    s.sendall(b"X")
                except OSError:
                    pass
        assert httpx.get(url + "/health", timeout=10).status_code == 200
        deadline = time.monotonic() + 10
        closed = sum(_closed_by_server(s, deadline) for s in heads + bodies)
        for s in heads + bodies:
            s.close()
        assert closed == len(heads) + len(bodies)
        r = httpx.post(url + "/route", json={"embedding": np.ones(D).tolist()}, timeout=10)
        assert r.status_code == 200


def test_defect02_batch_limit_scan_agrees_with_full_parse() -> None:
    """The early item scan (stops at max_batch + 1 items) says "over the limit" exactly when the parsed
    list is longer, for plain, spaced, nested and truncated bodies."""
    import json

    from knnroute.service.guard import _batch_over_limit

    for limit in (0, 1, 2, 5):
        for k in range(8):
            items = [{"embedding": [0.5, {"x": [1, "]"]}]} if i % 2 else {} for i in range(k)]
            for body in (json.dumps({"items": items}), json.dumps({"items": items}, indent=2)):
                assert _batch_over_limit(body.encode(), limit) == (k > limit), (limit, k, body)
    assert not _batch_over_limit(b'{"x": 1, "items": [{}, {}, {}]}', 1)  # other shapes: the full parse decides
    assert not _batch_over_limit(b'{"items": [{}, {', 1)


@pytest.fixture(scope="module")
def image_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A prompt router (WordLlama) served with an image folder, and a file that sits outside it."""
    pytest.importorskip("wordllama")
    from knnroute.embed import get_embedder
    from knnroute.service.app import create_app

    base = tmp_path_factory.mktemp("img")
    root = base / "images"
    root.mkdir()
    (base / "exists.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 64)
    emb = get_embedder("wordllama")
    prompts = [f"question number {i} about topic {i % 7}" for i in range(60)]
    X = emb.encode(prompts, progress=False)
    S = np.column_stack([np.arange(60) % 2, np.ones(60)]).astype(np.float64)
    C = np.tile([1e-4, 1e-2], (60, 1))
    p = ProductionRouter(KNNRouter(k=5).fit(X, S, C, model_names=["cheap", "best"]), embedder=emb)
    with thread_server(create_app(p, image_dir=root)) as url:
        yield url, base


def test_defect05_nul_byte_in_image_path_over_http(image_service: tuple[str, Path]) -> None:
    """A NUL byte in an image path: 422 with a message (was: 500 from os.path.realpath, connection dropped)."""
    url, _ = image_service
    r = httpx.post(url + "/route", json={"prompt": "hello", "image": "cat\u0000.png"}, timeout=30)
    assert r.status_code == 422 and "image 0" in r.json()["detail"]
    assert httpx.get(url + "/health", timeout=10).status_code == 200


def test_defect06_no_file_existence_oracle_over_http(image_service: tuple[str, Path]) -> None:
    """Outside the image folder: the same answer for a file that exists and one that does not (was:
    "outside the service's image folder" versus "not valid base64")."""
    url, base = image_service
    answers = set()
    for name in ("../exists.png", "../missing.png", str(base / "exists.png"), str(base / "missing.png")):
        r = httpx.post(url + "/route", json={"prompt": "hello", "image": name}, timeout=30)
        answers.add((r.status_code, r.text))
    assert len(answers) == 1 and next(iter(answers))[0] == 422


def test_per_client_concurrency_limit_option() -> None:
    """``max_client_concurrency``: a client with a request in flight gets 429 for the next one; others
    (and the same client once its request ends) are served."""
    import socket

    from knnroute.service.app import create_app

    app = create_app(_router(), max_client_concurrency=1)
    with thread_server(app) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"POST /route HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{")  # in flight: waiting for its body
            t0 = time.monotonic()
            r = httpx.get(url + "/health", timeout=10)
            while r.status_code != 429 and time.monotonic() - t0 < 5:
                time.sleep(0.05)
                r = httpx.get(url + "/health", timeout=10)
            assert r.status_code == 429 and "limit 1" in r.json()["detail"]
        t0 = time.monotonic()
        while httpx.get(url + "/health", timeout=10).status_code != 200 and time.monotonic() - t0 < 15:
            time.sleep(0.1)
        assert httpx.get(url + "/health", timeout=10).status_code == 200
