"""Router files: round trip, atomic save, and refusal of truncated / corrupt / wrong files."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import knnroute
from knnroute.production import (
    FORMAT_VERSION,
    FallbackPolicy,
    ProductionRouter,
    RouterFileError,
    load,
    read_metadata,
    save,
)
from knnroute.production.persist import MAGIC, PREAMBLE_SIZE
from knnroute.routers.knn import KNNRouter

N, D, M = 300, 24, 4
NAMES = ["small", "medium", "large", "huge"]


def _data(seed: int = 0, n: int = N, d: int = D) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    S = (rng.random((n, M)) < np.linspace(0.3, 0.9, M)).astype(np.float64)
    C = rng.random((n, M)) * np.array([1e-4, 5e-4, 2e-3, 1e-2])
    S[3, 1] = np.nan
    C[5, 2] = np.nan
    return X, S, C


@pytest.fixture(scope="module")
def prod() -> ProductionRouter:
    X, S, C = _data()
    r = KNNRouter(k=15, weighting="softmax", temperature=0.1, shrinkage=2.0).fit(X, S, C, model_names=NAMES)
    p = ProductionRouter(
        r,
        ids=[f"p{i}" for i in range(N)],
        prices={"small": (0.1, 0.2), "huge": (10.0, 30.0)},
        embedder={"identity": "test-embedder:v1", "spec": None},
        fallback=FallbackPolicy("huge", max_distance=0.9),
        default_lambda=50.0,
        meta={"dataset": "synthetic", "n_val": np.int64(80)},
    )
    Xv, Sv, Cv = _data(1, n=80)
    p.budget_table(Xv, Sv, Cv)
    return p


@pytest.fixture
def saved(prod: ProductionRouter, tmp_path: Path) -> Path:
    return prod.save(tmp_path / "router.knnr")


def _queries(n: int = 200, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)


# ------------------------------------------------------------------------------------- round trip
def test_round_trip_same_decisions_and_metadata(prod: ProductionRouter, saved: Path) -> None:
    q = knnroute.load(saved)
    assert isinstance(q, ProductionRouter)
    assert q.model_names == NAMES and q.ids == prod.ids and q.dim == D and q.size == N
    assert q.prices == prod.prices and q.fallback == prod.fallback and q.default_lambda == 50.0
    assert q.embedder_info["identity"] == "test-embedder:v1"
    assert (q.core.k, q.core.weighting) == (15, "softmax")
    assert q.core.temperature == pytest.approx(0.1) and q.core.shrinkage == pytest.approx(2.0)
    assert q.meta == {"dataset": "synthetic", "n_val": 80}
    np.testing.assert_array_equal(q.budget.lams, prod.budget.lams)
    np.testing.assert_array_equal(q.budget.shares, prod.budget.shares)
    np.testing.assert_array_equal(q.core.embeddings(), prod.core.embeddings())
    np.testing.assert_array_equal(q.core.scores(), prod.core.scores())  # NaN cells kept (equal_nan)
    Q = _queries()
    for lam in (0.0, 30.0, 300.0, 1e4):
        np.testing.assert_array_equal(q.route(Q, lam), prod.route(Q, lam))
        s1, c1 = q.predict(Q)
        s0, c0 = prod.predict(Q)
        np.testing.assert_array_equal(s1, s0)
        np.testing.assert_array_equal(c1, c0)
    d0, d1 = prod.decide(Q[0], max_cost=1e-3), q.decide(Q[0], max_cost=1e-3)
    assert (d0.model, d0.lam, d0.kth_similarity, d0.agreement) == (d1.model, d1.lam, d1.kth_similarity, d1.agreement)


def test_save_function_wraps_bare_router(tmp_path: Path) -> None:
    X, S, C = _data()
    r = KNNRouter(k=5).fit(X, S, C, model_names=NAMES)
    path = save(r, tmp_path / "bare.knnr", prices={"large": (1, 2)}, ids=[f"x{i}" for i in range(N)])
    q = load(path)
    assert q.ids[:2] == ["x0", "x1"] and q.prices == {"large": (1.0, 2.0)} and q.budget is None
    Q = _queries()
    np.testing.assert_array_equal(q.route(Q, 10.0, return_names=False), r.route(Q, 10.0))


def test_layout_header_and_alignment(saved: Path) -> None:
    raw = saved.read_bytes()
    magic, version, hlen, digest = struct.unpack_from("<8sII32s", raw, 0)
    assert magic == MAGIC and version == FORMAT_VERSION
    header = raw[PREAMBLE_SIZE : PREAMBLE_SIZE + hlen]
    assert hashlib.sha256(header).digest() == digest
    meta = json.loads(header)
    assert meta == read_metadata(saved)
    assert meta["payload_offset"] % 64 == 0
    for spec in meta["arrays"].values():
        assert spec["offset"] % 64 == 0
    assert meta["arrays"]["embeddings"]["shape"] == [N, D]
    assert meta["payload_offset"] + meta["payload_size"] == len(raw)
    payload = raw[meta["payload_offset"] :]
    assert hashlib.sha256(payload).hexdigest() == meta["payload_sha256"]
    emb = np.frombuffer(raw, "<f4", N * D, meta["arrays"]["embeddings"]["offset"]).reshape(N, D)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("precision", ["f16", "bf16"])
def test_reduced_precision_storage(prod: ProductionRouter, tmp_path: Path, precision: str) -> None:
    path = prod.save(tmp_path / f"r-{precision}.knnr", precision=precision)
    assert read_metadata(path)["precision"] == precision
    full = prod.save(tmp_path / "f32.knnr")
    assert path.stat().st_size < full.stat().st_size
    q = load(path)
    np.testing.assert_allclose(q.core.embeddings(), prod.core.embeddings(), atol=1e-2)
    Q = _queries(500)
    agree = (q.route(Q, 30.0) == prod.route(Q, 30.0)).mean()
    assert agree > 0.95


def test_save_is_atomic(prod: ProductionRouter, saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = saved.read_bytes()

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        prod.save(saved)
    monkeypatch.undo()
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]  # no temporary left behind


def test_loads_in_a_new_process(prod: ProductionRouter, saved: Path) -> None:
    Q = _queries(50)
    np.save(saved.parent / "q.npy", Q)
    code = (
        "import sys, numpy as np, knnroute;"
        f"r = knnroute.load({str(saved)!r}); Q = np.load({str(saved.parent / 'q.npy')!r});"
        "print(','.join(r.route(Q, 30.0)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip().split(",") == list(prod.route(Q, 30.0))


def test_after_updates_round_trip(tmp_path: Path) -> None:
    X, S, C = _data()
    p = ProductionRouter(KNNRouter(k=20).fit(X, S, C, model_names=NAMES), ids=[f"p{i}" for i in range(N)])
    p.remove_ids([f"p{i}" for i in range(0, N, 3)])
    X2, S2, C2 = _data(5, n=10)
    p.add(X2, S2, C2, ids=[f"new{i}" for i in range(10)])
    p.add_model("extra", np.linspace(0, 1, p.size), np.full(p.size, 1e-3), price=(0.5, 0.5))
    q = load(p.save(tmp_path / "u.knnr"))
    assert q.ids == p.ids and q.model_names == [*NAMES, "extra"] and q.prices["extra"] == (0.5, 0.5)
    Q = _queries()
    np.testing.assert_array_equal(q.route(Q, 10.0), p.route(Q, 10.0))


def test_k_above_support_after_removals(tmp_path: Path) -> None:
    X, S, C = _data(n=12)
    p = ProductionRouter(KNNRouter(k=10).fit(X, S, C, model_names=NAMES))
    p.remove_ids([str(i) for i in range(6)])  # 6 rows left, k=10: the core uses min(k, n)
    q = load(p.save(tmp_path / "small.knnr"))
    Q = _queries(20)
    np.testing.assert_array_equal(q.route(Q, 5.0), p.route(Q, 5.0))


# ------------------------------------------------------------------------------------- refusals
def _rewrite_meta(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    """Change the JSON header (keeping the payload where it is) and re-sign the header digest."""
    raw = bytearray(path.read_bytes())
    _, version, hlen, _ = struct.unpack_from("<8sII32s", raw, 0)
    meta = json.loads(bytes(raw[PREAMBLE_SIZE : PREAMBLE_SIZE + hlen]))
    room = meta["payload_offset"] - PREAMBLE_SIZE
    edit(meta)
    header = json.dumps(meta, separators=(",", ":")).encode()
    assert len(header) <= room, "edit made the header too long for this helper"
    header = header + b" " * (room - len(header))  # JSON allows trailing whitespace
    raw[:PREAMBLE_SIZE] = struct.pack("<8sII32s", MAGIC, version, len(header), hashlib.sha256(header).digest())
    raw[PREAMBLE_SIZE : PREAMBLE_SIZE + room] = header
    path.write_bytes(bytes(raw))


def test_truncated_files_are_refused(saved: Path, tmp_path: Path) -> None:
    raw = saved.read_bytes()
    meta = read_metadata(saved)
    cuts = [0, 4, 8, 20, PREAMBLE_SIZE - 1, PREAMBLE_SIZE + 10, meta["payload_offset"] - 1,
            meta["payload_offset"] + 100, len(raw) - 1]
    for cut in cuts:
        p = tmp_path / f"cut{cut}.knnr"
        p.write_bytes(raw[:cut])
        with pytest.raises(RouterFileError, match="truncated|empty"):
            load(p)


@pytest.mark.parametrize(
    ("where", "match"),
    [("magic", "not a knnroute router file"), ("header", "corrupt header"), ("payload", "corrupt payload")],
)
def test_corrupt_bytes_are_refused(saved: Path, where: str, match: str) -> None:
    raw = bytearray(saved.read_bytes())
    meta = read_metadata(saved)
    pos = {"magic": 0, "header": PREAMBLE_SIZE + 30, "payload": meta["payload_offset"] + 1000}[where]
    raw[pos] ^= 0x55
    saved.write_bytes(bytes(raw))
    with pytest.raises(RouterFileError, match=match):
        load(saved)


def test_unverified_payload_corruption_still_never_crashes(saved: Path) -> None:
    raw = bytearray(saved.read_bytes())
    off = read_metadata(saved)["arrays"]["embeddings"]["offset"]
    raw[off : off + 4] = np.float32(np.nan).tobytes()  # a NaN embedding passes verify=False ...
    saved.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="NaN or infinite|corrupt"):  # ... and the core refuses it
        load(saved, verify=False)
    with pytest.raises(RouterFileError, match="corrupt payload"):
        load(saved)


def test_wrong_version_is_refused(saved: Path) -> None:
    raw = bytearray(saved.read_bytes())
    struct.pack_into("<I", raw, 8, FORMAT_VERSION + 1)
    saved.write_bytes(bytes(raw))
    with pytest.raises(RouterFileError, match=f"unsupported format version {FORMAT_VERSION + 1}"):
        load(saved)


def test_wrong_dimension_is_refused(saved: Path) -> None:
    with pytest.raises(RouterFileError, match=f"wrong dimension: the router has dim={D}, expected 384"):
        load(saved, expect_dim=384)

    def lie(meta: dict) -> None:
        meta["dim"] = D + 1

    _rewrite_meta(saved, lie)
    with pytest.raises(RouterFileError, match=r"shape \[300, 24\], expected \[300, 25\]"):
        load(saved)


def test_unknown_precision_is_refused(saved: Path) -> None:
    def int4(meta: dict) -> None:
        meta["precision"] = "int4"

    _rewrite_meta(saved, int4)
    with pytest.raises(RouterFileError, match="unknown storage precision 'int4'"):
        load(saved)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m.update(n=-1), "empty router"),
        (lambda m: m.update(n="300"), "'n' has type str"),
        (lambda m: m["knn"].update(weighting="median"), "unknown weighting"),
        (lambda m: m["knn"].update(k=0), "k=0"),
        (lambda m: m.update(model_names=["a", "a", "b", "c"]), "distinct"),
        (lambda m: m.update(ids=m["ids"][:-1]), "ids must be 300"),
        (lambda m: m["arrays"]["scores"].update(offset=m["arrays"]["embeddings"]["offset"]), "overlap"),
        (lambda m: m["arrays"]["costs"].update(offset=m["payload_offset"] + m["payload_size"]), "outside"),
        (lambda m: m["arrays"]["costs"].update(offset=m["arrays"]["costs"]["offset"] + 4), "outside"),
        (lambda m: m["arrays"]["costs"].update(dtype="<f8"), "dtype"),
        (lambda m: m.update(payload_size=10**12), "truncated"),
        (lambda m: m.update(fallback={"model": "nobody"}), "fallback model"),
        (lambda m: m.update(budget={"lams": [1.0]}), "invalid contents"),
        (lambda m: m.pop("arrays"), "lacks 'arrays'"),
        (lambda m: m.update(format_version=2), "disagrees"),
    ],
)
def test_inconsistent_metadata_is_refused(saved: Path, edit, match: str) -> None:  # type: ignore[no-untyped-def]
    _rewrite_meta(saved, edit)
    with pytest.raises(RouterFileError, match=match):
        load(saved)


def test_garbage_and_empty_files(tmp_path: Path) -> None:
    p = tmp_path / "empty.knnr"
    p.write_bytes(b"")
    with pytest.raises(RouterFileError, match="empty"):
        load(p)
    rng = np.random.default_rng(0)
    for i in range(20):
        p = tmp_path / f"g{i}.knnr"
        body = rng.integers(0, 256, size=int(rng.integers(1, 4000)), dtype=np.uint8).tobytes()
        p.write_bytes((MAGIC if i % 2 else b"") + body)
        with pytest.raises(RouterFileError):
            load(p)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.knnr")


def test_header_json_not_an_object(saved: Path) -> None:
    raw = bytearray(saved.read_bytes())
    header = b"[1, 2, 3]"
    raw[:PREAMBLE_SIZE] = struct.pack("<8sII32s", MAGIC, FORMAT_VERSION, len(header), hashlib.sha256(header).digest())
    raw[PREAMBLE_SIZE : PREAMBLE_SIZE + len(header)] = header
    saved.write_bytes(bytes(raw))
    with pytest.raises(RouterFileError, match="not a JSON object"):
        load(saved)
