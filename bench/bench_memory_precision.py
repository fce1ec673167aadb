"""Memory per support prompt, and reduced-precision quality: top-100 recall and routed-model agreement
with float32, on synthetic N = 100k and on the real RouterBench subset (MiniLM embeddings) across lambda.

By construction (precision.hpp) every precision returns the float32 neighbours exactly; these cases
measure it rather than assume it, and report the re-rank candidate counts that make it cheap.
"""

from __future__ import annotations

import numpy as np
import pytest

import knnroute_core as kc
from bench.conftest import QUICK, D, M, clustered, outcomes, record

PRECISIONS = ["f32", "bf16", "f16", "int8"]


def test_memory_per_prompt():
    n = 20000 if not QUICK else 2000
    X = clustered(n)
    S, C = outcomes(n)
    case = f"memory/N={n}/d={D}/M={M}"
    for p in PRECISIONS:
        r = kc.Router(X, S, C, k=100, precision=p)
        scanned = {"f32": 4 * D, "bf16": 2 * D + 4, "f16": 2 * D + 4, "int8": D + 8}[p]
        record(case, f"ours-{p}", bytes_per_prompt=r.memory_bytes / n, scanned_bytes_per_prompt=float(scanned))
    record(case, "numpy (X + S + C float32)", bytes_per_prompt=float(4 * D + 2 * 4 * M))
    import faiss

    index = faiss.IndexFlatIP(D)
    index.add(X)
    record(case, "faiss IndexFlatIP + S + C", bytes_per_prompt=float(index.code_size + 2 * 4 * M))
    from knnroute import KNNRouter

    h = KNNRouter(k=100, index="hnsw").fit(X, S, C)
    record(case, "ours-hnsw (hnswlib M=16, estimate)", bytes_per_prompt=h.memory_bytes() / n)


def _recall(a, b):
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b, strict=False)]))


def test_precision_synthetic():
    n = 100000 if not QUICK else 5000
    X = clustered(n)
    S, C = outcomes(n)
    rng = np.random.default_rng(11)
    Q = X[rng.integers(0, n, 200)] + 0.6 * clustered(200, seed=97)
    Q = np.ascontiguousarray(Q / np.linalg.norm(Q, axis=1, keepdims=True), dtype=np.float32)
    lams = np.concatenate([[0.0], np.geomspace(1e-1, 1e5, 99)])
    ref = kc.Router(X, S, C, k=100, query_threads=1)
    ref_idx = np.stack([ref.search(q[None], 100)[0][0] for q in Q])
    # route(q[None], lams): a batch of one query takes the single-query (compact-scan) path
    ref_route = np.stack([ref.route(q[None], lams, 1)[0] for q in Q])
    for p in PRECISIONS[1:]:
        r = kc.Router(X, S, C, k=100, precision=p, query_threads=1)
        idx, rer = [], []
        for q in Q:
            idx.append(r.search(q[None], 100)[0][0])
            rer.append(kc.last_rerank_count())
        routed = np.stack([r.route(q[None], lams, 1)[0] for q in Q])
        record(f"precision/synthetic/N={n}/k=100/200 queries x 100 lambdas", f"ours-{p}",
               recall_at_100=_recall(np.stack(idx), ref_idx), identical_ids=bool((np.stack(idx) == ref_idx).all()),
               routed_agreement=float((routed == ref_route).mean()), reranked_mean=float(np.mean(rer)),
               reranked_max=int(np.max(rer)))


def test_precision_real_routerbench():
    try:
        from knnroute.data import load_dataset
        from knnroute.embed import embed_dataset

        parts = [embed_dataset(ds, progress=False) for ds in load_dataset("routerbench")]
    except Exception as exc:  # data or embedder missing on this machine
        pytest.skip(f"real data unavailable: {exc}")
    X = np.concatenate([ds.embeddings[ds.split == "train"] for ds in parts]).astype(np.float32)
    S = np.concatenate([ds.scores[ds.split == "train"] for ds in parts]).astype(np.float32)
    C = np.concatenate([ds.costs[ds.split == "train"] for ds in parts]).astype(np.float32)
    Q = np.ascontiguousarray(np.concatenate([ds.embeddings[ds.split == "test"] for ds in parts]), dtype=np.float32)
    c_max = float(np.nanmean(C, axis=0).max())
    lams = np.concatenate([[0.0], np.geomspace(1e-3, 1e5, 199)]) / c_max
    k = 100
    ref = kc.Router(np.ascontiguousarray(X), S, C, k=k, query_threads=1)
    ref_idx = np.stack([ref.search(q[None], k)[0][0] for q in Q])
    ref_route = ref.route(Q, lams, 1)  # the float32 batch path: the reference
    case = f"precision/routerbench-0shot (MiniLM)/support={len(X)}/test={len(Q)}/k={k}/200 lambdas"
    for p in PRECISIONS[1:]:
        r = kc.Router(np.ascontiguousarray(X), S, C, k=k, precision=p, query_threads=1)
        idx, rer = [], []
        for q in Q:
            idx.append(r.search(q[None], k)[0][0])
            rer.append(kc.last_rerank_count())
        routed = np.stack([r.route(q[None], lams, 1)[0] for q in Q])
        record(case, f"ours-{p}", recall_at_100=_recall(np.stack(idx), ref_idx),
               identical_ids=bool((np.stack(idx) == ref_idx).all()),
               routed_agreement=float((routed == ref_route).mean()), reranked_mean=float(np.mean(rer)))
