"""End to end: prompt text -> routed model, one prompt at a time, one thread, for both embedders.

Each round routes one prompt the service has not seen before through ``ProductionRouter.route_prompt``
(embed with the router's embedder, then the fused core path ``decide``: normalise, search, aggregate,
argmax, confidence). The two halves are timed inside the round, so the case reports the share of time spent
embedding vs routing. Impls:

* ``minilm-int8``: all-MiniLM-L6-v2 (d = 384, torch on 1 thread), support stored int8 (exact search).
* ``wordllama-int8`` / ``wordllama-f32``: the static WordLlama embedder (d = 256) through its lean
  single-prompt path (cached exact tokenization, gather, sum, normalise).
* ``wordllama-library-int8``: the same embedding computed by the library's own ``embed`` call (what the lean
  path saves).

Support set: N prompts (default 10,000) of the real datasets embedded by each embedder (MiniLM from the on-disk
cache), with synthetic outcomes for M = 11 models, k = 100; queries are the next prompts of the same shuffled
pool (never in the support set, each routed once). Without real data, or in quick mode, the support rows are
clustered synthetic vectors and the queries generated sentences (figures then say "synthetic"); quick mode
leaves MiniLM out (no torch load in the CI smoke run). The word cache of the static embedder starts empty.

Target (issue 9): static path p50 < 0.3 ms at N = 10k, d = 256, k = 100, M = 11; reported as a ratio to the
MiniLM path measured in the same run.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from bench.conftest import QUICK, RESULTS, ROUNDS, clustered, outcomes, record, run_bench

N = 1000 if QUICK else 10000
K = 100
M = 11
LAM = 200.0  # score per USD, as in bench_single
WARMUP = 5
N_QUERIES = ROUNDS + WARMUP + 8
CASE = f"e2e/N={N}/k={K}/M={M}/t=1"
IMPLS = (["minilm-int8"] if not QUICK else []) + ["wordllama-int8", "wordllama-f32", "wordllama-library-int8"]

_pool: dict = {}


def _real_texts() -> list[str] | None:
    """Every real dataset's prompts as the evaluation embeds them (shared prefix stripped), deduplicated,
    shuffled with a fixed seed; None without real data."""
    from knnroute.data import data_dir, list_real_datasets, load_dataset
    from knnroute.data.hygiene import PrefixStripper

    if data_dir(required=False) is None:
        return None
    seen: dict[str, None] = {}
    for name in list_real_datasets():
        for ds in load_dataset(name):
            if ds.prompts is None:
                continue
            texts = PrefixStripper().fit_transform(list(ds.prompts), None if ds.groups is None else list(ds.groups))
            seen.update((t, None) for t in texts if t.strip())
    texts = list(seen)
    order = np.random.default_rng(20240601).permutation(len(texts))
    return [texts[i] for i in order]


def _synthetic_texts(n: int) -> list[str]:
    rng = np.random.default_rng(7)
    words = [*["explain", "the", "difference", "between", "a", "list", "and", "a", "tuple", "in", "python"],
             *["write", "poem", "about", "sea"],
             *["solve", "equation", "integral", "derivative", "of", "x", "squared", "translate", "sentence"],
             *["into", "french"],
             *["summarise", "this", "article", "what", "is", "capital", "city", "population", "history", "war"],
             *["economy"],
             *["model", "price", "cost", "quality", "best", "answer", "step"]]
    return [" ".join(rng.choice(words, int(rng.integers(8, 60)))) for _ in range(n)]


def pool() -> tuple[list[str], list[str], str]:
    """(support texts, query texts, source label)."""
    if not _pool:
        texts = None if QUICK else _real_texts()
        if texts is not None and len(texts) >= N + N_QUERIES:
            _pool["v"] = (texts[:N], texts[N : N + N_QUERIES], f"real prompts ({len(texts)} in the pool)")
        else:
            _pool["v"] = (None, _synthetic_texts(N_QUERIES), "synthetic (clustered support, generated queries)")
    return _pool["v"]


def _support(embedder, support_texts) -> np.ndarray:
    if support_texts is None:
        return clustered(N, embedder.dim)
    from knnroute.embed import embed_texts

    return embed_texts(support_texts, embedder, progress=True)


@pytest.mark.parametrize("impl", IMPLS)
def test_e2e_route_prompt(benchmark, impl):
    from threadpoolctl import threadpool_limits

    from knnroute.embed import get_embedder
    from knnroute.production import ProductionRouter
    from knnroute.routers.knn import KNNRouter

    name, *rest = impl.split("-")
    prec = rest[-1]
    emb = get_embedder("minilm" if name == "minilm" else "wordllama")
    support_texts, queries, source = pool()
    X = _support(emb, support_texts)
    S, C = outcomes(N)
    torch_threads = None
    if name == "minilm":
        import torch

        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            knn = KNNRouter(k=K, n_threads=1, precision=prec).fit(X, S, C, model_names=[f"m{i}" for i in range(M)])
            prod = ProductionRouter(knn, embedder=emb)
            if "library" in impl:
                lib = emb._load()

                def embed(text: str) -> np.ndarray:
                    return lib.embed(text, norm=True)[0]
            else:
                embed = prod.embed_one
            if name == "wordllama":
                emb._words.clear()  # start cold: every timed prompt is new to the service
            t_embed: list[float] = []
            t_route: list[float] = []
            routed: list[str] = []

            def one(text: str) -> None:
                t0 = time.perf_counter()
                x = embed(text)
                t1 = time.perf_counter()
                d = prod.decide(x, LAM)
                t2 = time.perf_counter()
                t_embed.append(t1 - t0)
                t_route.append(t2 - t1)
                routed.append(d.model)

            it = iter(queries)
            times = run_bench(benchmark, lambda: one(next(it)), rounds=ROUNDS, warmup=WARMUP)
    finally:
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
    te = np.asarray(t_embed[WARMUP:])
    tr = np.asarray(t_route[WARMUP:])
    timed = queries[WARMUP : WARMUP + len(te)]
    # the lean path routes exactly like the library's embedding (same model for every timed prompt)
    extra = {
        "N": N, "d": emb.dim, "k": K, "M": M, "threads": 1, "precision": prec, "source": source,
        "embed_p50_ms": float(np.median(te) * 1e3),
        "route_p50_ms": float(np.median(tr) * 1e3),
        "embed_share": float(te.sum() / (te.sum() + tr.sum())),
        "query_chars_p50": float(np.median([len(t) for t in timed])),
        "routed": routed[WARMUP:],
    }
    if name == "wordllama" and "library" not in impl:
        lib = emb._load()
        same = [
            prod.decide(lib.embed(t, norm=True)[0], LAM).model == m
            for t, m in zip(timed, routed[WARMUP:], strict=False)
        ]
        extra["agree_with_library"] = float(np.mean(same))
    e = record(CASE, impl, times, **extra)
    ref = RESULTS["cases"][CASE].get("minilm-int8")
    if ref and impl != "minilm-int8":
        e["minilm_p50_ratio"] = ref["p50_ms"] / e["p50_ms"]
