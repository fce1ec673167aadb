"""Static WordLlama embedder: identity, determinism, unit norm, equality with the library, offline load,
the router file's embedder record (mismatch refusal), the service, and ``eval``/``fit --embedder``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("wordllama", reason="the static embedder needs the 'wordllama' package")

from knnroute.embed import CallableEmbedder, embed_texts, get_embedder
from knnroute.embed.static import WordLlamaEmbedder, wordllama_dir
from knnroute.production import ProductionRouter
from knnroute.routers.knn import KNNRouter

TEXTS = [
    "What is the capital of France?",
    "Write a Python function that returns the n-th Fibonacci number.",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\n\nhere",
    "multiple    spaces   between words",
    "Unicode: naïve café, 日本語のテキスト, emoji 🤖🚀, ∑ x_i^2",
    "\u2581already has the meta-space\u2581\u2581char",
    "Solve: if 3x + 7 = 22, what is x? Show your reasoning step by step. " * 30,
    "a",
]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KNNROUTE_CACHE", str(tmp_path_factory.mktemp("wl-cache")))


@pytest.fixture(scope="module")
def wl() -> WordLlamaEmbedder:
    emb = get_embedder("wordllama")
    assert isinstance(emb, WordLlamaEmbedder)
    return emb


@pytest.fixture(scope="module")
def library():  # type: ignore[no-untyped-def]
    """The library's own inference object, loaded independently of our embedder."""
    import wordllama

    return wordllama.WordLlama.load("l2_supercat", cache_dir=wordllama_dir(), disable_download=True)


# ------------------------------------------------------------------------------------- embedder
def test_registry_identity_names_the_weights(wl: WordLlamaEmbedder) -> None:
    assert get_embedder("wordllama") is wl and wl.dim == 256 and wl.spec == "wordllama"
    folder = wordllama_dir()
    w = hashlib.sha256((folder / "weights" / "l2_supercat_256.safetensors").read_bytes()).hexdigest()[:16]
    t = hashlib.sha256((folder / "tokenizers" / "l2_supercat_tokenizer_config.json").read_bytes()).hexdigest()[:16]
    assert wl.identity == f"wordllama-l2_supercat-256:sha256={w}:tok={t}"
    assert get_embedder("wordllama-256").identity == wl.identity
    small = get_embedder("wordllama-64")
    assert small.dim == 64 and small.identity != wl.identity and small.spec == "wordllama-64"
    with pytest.raises(ValueError, match="dim must be one of"):
        WordLlamaEmbedder(dim=100)


def test_unit_norm_float32_deterministic(wl: WordLlamaEmbedder) -> None:
    X = wl.encode(TEXTS, progress=False)
    assert X.dtype == np.float32 and X.shape == (len(TEXTS), 256) and X.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-6)
    # same bits again, in another order and batch size, and from a fresh instance
    np.testing.assert_array_equal(wl.encode(TEXTS, batch_size=1, progress=False), X)
    rev = wl.encode(TEXTS[::-1], progress=False)[::-1]
    np.testing.assert_array_equal(rev, X)
    np.testing.assert_array_equal(WordLlamaEmbedder().encode(TEXTS, progress=False), X)
    for i, t in enumerate(TEXTS):
        x1 = wl.encode_one(t)
        assert x1.dtype == np.float32 and x1.shape == (256,)
        np.testing.assert_allclose(x1, X[i], atol=1e-6)
        np.testing.assert_array_equal(wl.encode_one(t), x1)


def test_equals_the_library(wl: WordLlamaEmbedder, library) -> None:  # type: ignore[no-untyped-def]
    """Token ids exactly equal the tokenizer's whole-string encoding; vectors equal library.embed(norm=True)."""
    for t in TEXTS:
        assert wl.token_ids(t) == library.tokenizer.encode(t, add_special_tokens=False).ids, t
    ref = library.embed(TEXTS, norm=True)
    np.testing.assert_allclose(wl.encode(TEXTS, progress=False), ref, atol=2e-6)
    # truncated dims: the normalised leading dimensions of the un-normalised 256-d mean
    raw = library.embed(TEXTS, norm=False)[:, :64]
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(get_embedder("wordllama-64").encode(TEXTS, progress=False), raw, atol=2e-6)


def test_empty_text_gets_a_fixed_direction(wl: WordLlamaEmbedder) -> None:
    X = wl.encode(["", "", "x"], progress=False)
    np.testing.assert_array_equal(X[0], X[1])
    assert abs(float(np.linalg.norm(X[0])) - 1.0) < 1e-6 and not np.allclose(X[0], X[2])
    np.testing.assert_allclose(wl.encode_one(""), X[0], atol=1e-7)
    mean = wl._table.mean(axis=0, dtype=np.float64)  # type: ignore[union-attr]
    np.testing.assert_allclose(X[0], mean / np.linalg.norm(mean), atol=1e-6)


def test_bad_input(wl: WordLlamaEmbedder) -> None:
    with pytest.raises(TypeError, match="expected str"):
        wl.encode_one(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected str"):
        wl.encode(["ok", None], progress=False)  # type: ignore[list-item]


def test_cache_is_keyed_by_identity(wl: WordLlamaEmbedder, tmp_path: Path) -> None:
    stats: dict = {}
    a = embed_texts(TEXTS, "wordllama", cache_dir=tmp_path, progress=False, stats=stats)
    assert stats["identity"] == wl.identity and stats["n_encoded"] == len(TEXTS)
    b = embed_texts(TEXTS, "wordllama", cache_dir=tmp_path, progress=False, stats=stats)
    assert stats["n_cached"] == len(TEXTS)
    np.testing.assert_array_equal(a, b)
    c = embed_texts(TEXTS, "wordllama-128", cache_dir=tmp_path, progress=False, stats=stats)
    assert stats["n_encoded"] == len(TEXTS) and c.shape == (len(TEXTS), 128)  # its own cache folder


_OFFLINE_SCRIPT = textwrap.dedent(
    """
    import logging, socket, sys
    def _blocked(*a, **k):
        raise RuntimeError("network access attempted")
    socket.socket.connect = _blocked
    socket.socket.connect_ex = _blocked
    socket.create_connection = _blocked
    socket.getaddrinfo = _blocked
    import knnroute
    from knnroute.embed import get_embedder
    e = get_embedder("wordllama")
    assert "wordllama" not in sys.modules and "torch" not in sys.modules, "eager import"
    handlers = list(logging.getLogger().handlers)
    x = e.encode(["offline works", "second prompt"], progress=False)
    assert logging.getLogger().handlers == handlers, "wordllama changed the root logger"
    print(x.shape[1], float(abs(x[0]).sum()) > 0, "torch" in sys.modules)
    """
)


def test_offline_load_with_network_blocked(tmp_path: Path) -> None:
    """A fresh process, sockets blocked, HF_HUB_OFFLINE=1, an empty HOME (no ~/.cache/wordllama)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HOME=str(tmp_path), KNNROUTE_CACHE=str(tmp_path / "c"))
    r = subprocess.run([sys.executable, "-c", _OFFLINE_SCRIPT], env=env, capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["256", "True", "False"]
    assert not (tmp_path / ".cache" / "wordllama").exists()


# --------------------------------------------------------------------------- router file, service
def _texts(n: int, seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Prompts on three topics; topic decides which of three models is best (so routing is not trivial)."""
    rng = np.random.default_rng(seed)
    topics = [
        ("python code function loop list dictionary bug", 0),
        ("poem story novel character metaphor rhyme", 1),
        ("integral derivative equation matrix probability", 2),
    ]
    words = ["please", "explain", "write", "solve", "the", "a", "of", "for", "with", "about"]
    texts, S = [], np.zeros((n, 3))
    for i in range(n):
        vocab, best = topics[i % 3]
        w = list(rng.choice(vocab.split(), 5)) + list(rng.choice(words, 3))
        rng.shuffle(w)
        texts.append(" ".join(w))
        S[i] = 0.3
        S[i, best] = 0.9
    C = np.tile([1e-4, 1e-3, 1e-2], (n, 1))
    return texts, S, C


@pytest.fixture(scope="module")
def wl_router(wl: WordLlamaEmbedder) -> tuple[ProductionRouter, list[str]]:
    texts, S, C = _texts(300, 0)
    X = wl.encode(texts, progress=False)
    knn = KNNRouter(k=15).fit(X, S, C, model_names=["coder", "writer", "mathematician"])
    return ProductionRouter(knn, embedder="wordllama"), _texts(30, 1)[0]


def test_router_file_records_and_refuses(wl: WordLlamaEmbedder, wl_router, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from knnroute import production

    prod, queries = wl_router
    assert prod.embedder_info["spec"] == "wordllama" and prod.embedder_info["identity"] == wl.identity
    f = prod.save(tmp_path / "wl.knnr")
    back = production.load(f)
    assert back.embedder_info["identity"] == wl.identity and back.embedder_info["spec"] == "wordllama"
    ref = [prod.decide(wl.encode_one(q)).model for q in queries]
    assert back.route_prompts(queries) == ref
    assert [back.route_prompt(q).model for q in queries] == ref
    # topic routing works through the file: code prompts go to the coder, etc.
    assert ref[:3] == ["coder", "writer", "mathematician"]
    # another embedder of the same dimension is refused, at load and later
    other = CallableEmbedder(lambda t: np.ones((len(t), 256)), identity="other-256")
    with pytest.raises(ValueError, match="embedder mismatch"):
        production.load(f, embedder=other)
    with pytest.raises(ValueError, match="embedder mismatch"):
        back.set_embedder(get_embedder("wordllama-128"))
    assert production.load(f, embedder="wordllama").route_prompt(queries[0]).model == ref[0]
    # a file that records other WordLlama weights: the spec rebuilds today's table -> refused
    forged = ProductionRouter(prod.knn, embedder={"identity": "wordllama-l2_supercat-256:sha256=0000:tok=0000",
                                                  "spec": "wordllama"})
    g = production.load(forged.save(tmp_path / "forged.knnr"))
    with pytest.raises(ValueError, match="embedder mismatch"):
        g.route_prompts(queries[:1])
    with pytest.raises(ValueError, match="embedder mismatch"):
        g.route_prompt(queries[0])


def test_service_routes_prompts_with_the_recorded_embedder(wl_router) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("fastapi", reason="the service needs the 'serve' extra")
    pytest.importorskip("uvicorn", reason="the service needs the 'serve' extra")
    import httpx

    from knnroute.service.app import create_app
    from tests.test_serve import thread_server

    prod, queries = wl_router
    app = create_app(prod)
    with thread_server(app) as url, httpx.Client(base_url=url, timeout=10) as c:
        h = c.get("/health").json()
        assert h["embedder"] == prod.embedder_info["identity"]
        for q in queries[:9]:
            for lam in (0.0, 100.0):
                r = c.post("/route", json={"prompt": q, "lambda": lam})
                assert r.status_code == 200, r.text
                assert r.json()["model"] == prod.decide(get_embedder("wordllama").encode_one(q), lam).model


# ------------------------------------------------------------------------- CLI on a real subset
@pytest.fixture(scope="module")
def subset_csv(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """300 ARC-Challenge prompts of RouterBench as a long-format CSV (a small real dataset)."""
    import pandas as pd

    from knnroute.data import load_dataset

    ds = load_dataset("routerbench")[0]
    idx = np.random.default_rng(0).choice(ds.n, 300, replace=False)
    rows = []
    for i in idx:
        for m, name in enumerate(ds.model_names):
            s, c = ds.scores[i, m], ds.costs[i, m]
            rows.append({"prompt_id": ds.ids[i], "model": name, "score": None if np.isnan(s) else s,
                         "cost": None if np.isnan(c) else c, "prompt": ds.prompts[i], "task": ds.groups[i]})
    path = tmp_path_factory.mktemp("subset") / "arc300.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path, load_dataset(str(path))[0]


@pytest.mark.realdata
def test_eval_cli_with_wordllama_equals_library_embeddings(subset_csv, tmp_path: Path, library) -> None:  # type: ignore[no-untyped-def]
    from knnroute.cli import main
    from knnroute.data.hygiene import PrefixStripper
    from knnroute.evaluate.runner import EvalData, evaluate

    path, ds = subset_csv
    out = tmp_path / "e.json"
    rc = main(["eval", "--data", str(path), "--embedder", "wordllama", "--routers", "knn-10,knn-100",
               "--seeds", "2", "--json", str(out), "--no-progress"])
    assert rc == 0
    j = json.loads(out.read_text())
    assert j["datasets"][0]["embedder"] == get_embedder("wordllama").identity
    # reference: the same prompts, stripped the same way, embedded by the library itself
    texts = PrefixStripper().fit_transform(list(ds.prompts), list(ds.groups))
    ref = evaluate([EvalData.from_dataset(ds.with_embeddings(library.embed(texts, norm=True)))],
                   ["knn-10", "knn-100"], [0, 1], progress=False)
    want = {(r["router"], r["seed"]): r["auc"] for r in ref.records if r["router"].startswith("knn")}
    got = {(r["router"], r["seed"]): r["auc"] for r in j["results"] if r["router"].startswith("knn")}
    assert set(got) == set(want) and len(got) == 4
    for key, v in want.items():
        assert got[key] == pytest.approx(v, abs=1e-6), key


@pytest.mark.realdata
def test_fit_cli_with_wordllama_writes_a_routable_file(subset_csv, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from knnroute import production
    from knnroute.cli import main
    from knnroute.data.hygiene import PrefixStripper

    path, ds = subset_csv
    f = tmp_path / "arc.knnr"
    rc = main(["fit", "--data", str(path), "--out", str(f), "--embedder", "wordllama", "--k", "20",
               "--scan-precision", "int8", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    report = json.loads(out)
    wl = get_embedder("wordllama")
    assert report["embedder"] == wl.identity
    prod = production.load(f)
    assert prod.embedder_info == {**prod.embedder_info, "identity": wl.identity, "spec": "wordllama"}
    assert prod.dim == 256 and prod.knn.precision == "int8" and report["scan_precision"] == "int8"
    # routing raw prompt text through the file equals routing our own stripped, normalised, embedded prompt
    stripper = PrefixStripper()
    texts = stripper.fit_transform(list(ds.prompts), list(ds.groups))
    norm = prod.encoder.text_norm  # fit normalises by default (knnroute.embed.textnorm), fitted on train prompts
    assert norm is not None and len(norm.vocab) > 100
    for i in range(0, 300, 37):
        d = prod.route_prompt(ds.prompts[i])
        assert d.model == prod.decide(wl.encode_one(norm(texts[i]))).model
        assert d.model in ds.model_names
    with pytest.raises(ValueError, match="embedder mismatch"):
        production.load(f, embedder=CallableEmbedder(lambda t: np.ones((len(t), 256)), identity="x"))
