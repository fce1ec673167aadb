"""The lexical hybrid (TF-IDF LSA + dense): LexicalModel vs scikit-learn, the hybrid embedder, router files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from knnroute.embed.lexical import (
    MAX_CHARS,
    HybridLexicalEmbedder,
    LexicalModel,
    lexical_vectors,
    mix,
)

ROOT = Path(__file__).resolve().parents[1]


def corpus() -> list[str]:
    """Real-ish text: the paragraphs of the project's docs (English prose, code, numbers, punctuation)."""
    paras: list[str] = []
    for f in sorted((ROOT / "docs").glob("*.md")):
        paras += [p.strip() for p in re.split(r"\n\s*\n", f.read_text(encoding="utf-8")) if len(p.strip()) > 40]
    extra = ["Ünïcode WÖRDS and ÜNÏCODE words, naïve café", "x", "", "!!! ???", "The THE the tHe"]
    return paras[:400] + extra


def sklearn_reference(train: list[str], texts: list[str], dim: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, max_features=50_000)
    T = vec.fit_transform(train)
    svd = TruncatedSVD(n_components=dim, random_state=seed).fit(T)
    Z = svd.transform(vec.transform(texts))
    n = np.linalg.norm(Z, axis=1, keepdims=True)
    return Z / np.where(n > 0, n, 1.0)


def test_transform_matches_sklearn() -> None:
    pytest.importorskip("sklearn")
    texts = corpus()
    assert len(texts) > 200
    train = texts[::2]
    model = LexicalModel.fit(train, dim=64, seed=3)
    assert model is not None and model.dim == 64
    assert model.components.shape == (64, model.n_terms) and model.idf.shape == (model.n_terms,)
    assert model.components.dtype == np.float32 and model.idf.dtype == np.float32
    got = model.transform(texts)
    want = sklearn_reference(train, texts, 64, 3)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)
    norms = np.linalg.norm(got, axis=1)
    zero = norms == 0
    assert zero.sum() >= 2  # "", "!!! ???" (no term) stay zero rows
    np.testing.assert_allclose(norms[~zero], 1.0, atol=1e-5)


@pytest.mark.parametrize(("max_features", "dim", "seed"), [(50_000, 64, 3), (300, 32, 0), (200_000, 256, 1)])
def test_fit_is_scikit_learns_bit_for_bit(max_features: int, dim: int, seed: int) -> None:
    # LexicalModel.fit runs scikit-learn's TfidfVectorizer + TruncatedSVD steps on SciPy without importing
    # scikit-learn: same vocabulary, idf and components (to the last bit, on one BLAS thread).
    pytest.importorskip("sklearn")
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from threadpoolctl import threadpool_limits

    train = corpus()[::2]
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, max_features=max_features)
    T = vec.fit_transform(train)
    k = min(dim, T.shape[1] - 1, len(train) - 1)
    with threadpool_limits(limits=1):
        svd = TruncatedSVD(n_components=k, random_state=seed).fit(T)
    model = LexicalModel.fit(train, dim=dim, seed=seed, max_features=max_features)
    assert model is not None
    assert model.vocabulary == list(vec.get_feature_names_out())
    np.testing.assert_array_equal(model.idf, vec.idf_.astype(np.float32))
    np.testing.assert_array_equal(model.components, svd.components_.astype(np.float32))


def test_core_counts_equal_the_python_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    # knnroute_core.count_terms (ASCII documents tokenised in C++, the others given as Python's terms) builds
    # the very matrix, vocabulary and idf of the pure-Python counting loop
    pytest.importorskip("scipy")
    from knnroute.embed import lexical

    docs = [*corpus(), "Ünïcode again: naïve café", "x y", "ab ab ab", "AB cd_ef 12"]
    assert not all(d.isascii() for d in docs) and sum(d.isascii() for d in docs) > 100
    got = lexical._tfidf(docs, 1000)
    monkeypatch.setattr(lexical, "_count_core", lambda docs: None)
    want = lexical._tfidf(docs, 1000)
    assert got is not None and want is not None
    assert got[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])
    for attr in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(got[2], attr), getattr(want[2], attr))


def test_core_transform_equals_the_numpy_transform() -> None:
    # ASCII prompts go through knnroute_core.LexicalIndex (terms looked up in C++, only the prompt's own LSA
    # rows touched); the rest through NumPy. Same rows to float32 rounding, and the same terms.
    pytest.importorskip("sklearn")
    import knnroute_core

    texts = corpus()
    model = LexicalModel.fit(texts[::2], dim=48, seed=1)
    assert model is not None
    edge = [
        "a b c", "ab", "AB_cd-ef 12 x9 __ _a", "tab\there\nnewline  spaces", "the the the the",
        "x" * (MAX_CHARS + 50) + " the", ("word " * 9000)[: MAX_CHARS - 2] + "tail end", "naïve café prompt",
        "prompt with an emoji 🙂 in the middle", "ends with a word", "UPPER lower MiXeD",
    ]
    all_texts = texts + edge + [t.upper() for t in texts[:50]]
    got = model.transform(all_texts)
    want = model.transform_numpy(all_texts)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-7)
    core = knnroute_core.LexicalIndex(model.vocabulary, model.idf, model._comp_t)
    out, ok = core.transform(all_texts, MAX_CHARS)
    assert list(ok) == [t.isascii() for t in all_texts]  # the non-ASCII ones were left to NumPy
    assert not np.asarray(out)[~np.asarray(ok)].any()
    for i, t in enumerate(model.vocabulary[:500]):
        assert core.find(t) == i
    assert core.find("no such term here") == -1
    with pytest.raises(TypeError):
        model.transform(["ok", 3])  # type: ignore[list-item]


def test_hybrid_decisions_with_the_core_transform_are_the_numpy_ones() -> None:
    # the hybrid router's decisions on held-out prompts are the same whether their lexical rows come from the
    # core (the serving path now) or from NumPy (the path before): support built the NumPy way, as a router
    # file fitted before holds it
    pytest.importorskip("sklearn")
    from knnroute.routers.knn import KNNRouter

    texts = corpus()
    rng = np.random.default_rng(3)
    dense = rng.normal(size=(len(texts), 24)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    tr, te = np.arange(0, len(texts), 2), np.arange(1, len(texts), 2)
    model = LexicalModel.fit([texts[i] for i in tr], dim=48, seed=0)
    assert model is not None
    S, C = rng.random((len(texts), 4)), rng.uniform(1e-4, 1e-2, (len(texts), 4))
    for w in (0.75, 0.5):
        support = mix(dense[tr], model.transform_numpy([texts[i] for i in tr]), w)
        router = KNNRouter(k=10, weighting="similarity").fit(support, S[tr], C[tr])
        queries = [texts[i] for i in te]
        core_rows = mix(dense[te], model.transform(queries), w)
        numpy_rows = mix(dense[te], model.transform_numpy(queries), w)
        for lam in (0.0, 30.0, 300.0):
            np.testing.assert_array_equal(router.route(core_rows, lam), router.route(numpy_rows, lam))


def test_lexical_vectors_is_the_model() -> None:
    pytest.importorskip("sklearn")
    texts = corpus()
    train = np.arange(0, len(texts), 3)
    V = lexical_vectors(texts, train, dim=32, seed=1)
    from knnroute.embed.lexical import EVAL_MAX_FEATURES

    m = LexicalModel.fit([texts[i] for i in train], dim=32, seed=1, max_features=EVAL_MAX_FEATURES)
    assert V is not None and m is not None
    np.testing.assert_array_equal(V, m.transform(texts))
    assert lexical_vectors(["a b", "c d"], [0, 1]) is None  # too few prompts
    assert lexical_vectors(["aa", "bb", "cc", "dd"], [0, 1, 2, 3]) is None  # no shared term


def test_transform_bounds_and_types() -> None:
    pytest.importorskip("sklearn")
    m = LexicalModel.fit(["alpha beta gamma", "alpha beta delta", "gamma delta alpha", "beta zeta"], dim=2)
    assert m is not None
    long = "alpha " * (MAX_CHARS // 6) + "zzz " * 100_000
    np.testing.assert_array_equal(m.transform([long]), m.transform([long[:MAX_CHARS]]))
    with pytest.raises(TypeError):
        m.transform("alpha beta")
    with pytest.raises(TypeError):
        m.transform([3])  # type: ignore[list-item]


def test_model_validation() -> None:
    comp = np.ones((2, 3), dtype=np.float32)
    idf = np.ones(3, dtype=np.float32)
    LexicalModel(["a b", "aa", "bb"], idf, comp)
    for vocab, i, c in [
        (["aa", "aa", "bb"], idf, comp),  # duplicate term
        (["aa", "bb"], idf, comp),  # V disagrees
        (["aa", "bb", ""], idf, comp),  # empty term
        (["aa", "bb", "cc"], -idf, comp),  # idf <= 0
        (["aa", "bb", "cc"], idf, comp * np.nan),  # not finite
        (["aa", "bb", "cc"], idf, np.ones((2000, 3), np.float32)),  # k over the cap
    ]:
        with pytest.raises(ValueError, match="lexical model"):
            LexicalModel(vocab, i, c)
    with pytest.raises(ValueError, match="settings"):
        LexicalModel(["aa", "bb", "cc"], idf, comp, {"lowercase": False})


# ------------------------------------------------------------------------------------ hybrid embedder
def fake_dense(dim: int = 8) -> object:
    """A deterministic text embedder without a model (hash of the words), cacheable by identity."""
    from knnroute.embed.encoders import CallableEmbedder

    def fn(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), dim), dtype=np.float32)
        for r, t in enumerate(texts):
            for wd in t.lower().split() or ["empty"]:
                rng = np.random.default_rng(sum(map(ord, wd)))
                out[r] += rng.normal(size=dim).astype(np.float32)
        out += 1e-3
        return out

    return CallableEmbedder(fn, identity="fake-dense-v1", dim=dim)


def test_hybrid_embedder() -> None:
    pytest.importorskip("sklearn")
    texts = corpus()
    m = LexicalModel.fit(texts[:200], dim=16)
    assert m is not None
    dense = fake_dense()
    h = HybridLexicalEmbedder(dense, m, 0.75)
    assert h.dim == 8 + 16
    assert "fake-dense-v1" in h.identity and m.sha256() in h.identity and "w=0.75" in h.identity
    X = h.encode(texts[:30], progress=False)
    D = dense.encode(texts[:30], progress=False)  # type: ignore[attr-defined]
    L = m.transform(texts[:30])
    assert X.shape == (30, 24)
    # the dot product is the hybrid similarity (rows with a lexical part are unit already)
    has = np.linalg.norm(L, axis=1) > 0
    Xh, Dh, Lh = X[has], D[has], L[has]
    np.testing.assert_allclose(Xh @ Xh.T, 0.75 * (Dh @ Dh.T) + 0.25 * (Lh @ Lh.T), atol=1e-5)
    np.testing.assert_allclose(h.encode_one(texts[3]), X[3], atol=1e-6)
    m2 = LexicalModel.fit(texts[1:201], dim=16)
    assert m2 is not None and HybridLexicalEmbedder(dense, m2, 0.75).identity != h.identity
    assert HybridLexicalEmbedder(dense, m, 0.5).identity != h.identity
    for bad in (1.0, 0.0, 1.5, True):
        with pytest.raises(ValueError, match="w must be"):
            HybridLexicalEmbedder(dense, m, bad)  # type: ignore[arg-type]
    np.testing.assert_allclose(mix(D[has], L[has], 0.75), Xh, atol=1e-6)


# ------------------------------------------------------------------------------------ router files
def _register_fake() -> object:
    from knnroute.embed.encoders import EMBEDDERS, register_embedder

    if "fake-dense-test" not in EMBEDDERS:
        def make() -> object:
            e = fake_dense()
            e.spec = "fake-dense-test"  # type: ignore[attr-defined]
            return e

        register_embedder("fake-dense-test", make)  # type: ignore[arg-type]
    from knnroute.embed.encoders import get_embedder

    return get_embedder("fake-dense-test")


def hybrid_router(w: float = 0.75, n: int = 120) -> tuple[object, list[str]]:
    """A ProductionRouter over a hybrid embedder (fake dense + lexical fitted on the support prompts)."""
    pytest.importorskip("sklearn")
    from knnroute.production import ProductionRouter
    from knnroute.routers.knn import KNNRouter

    texts = corpus()[:n]
    dense = _register_fake()
    lex = LexicalModel.fit(texts, dim=12)
    assert lex is not None
    h = HybridLexicalEmbedder(dense, lex, w)
    X = h.encode(texts, progress=False)
    rng = np.random.default_rng(0)
    S = rng.random((n, 3))
    C = rng.random((n, 3)) * 1e-3
    knn = KNNRouter(k=5, weighting="similarity").fit(X, S, C, model_names=["a", "b", "c"])
    return ProductionRouter(knn, embedder=h, prefix_stripper={"prefixes": {}}), texts


QUERIES = ["How do I save a router file?", "knnroute fit --data routerbench", "lambda budget table cost",
           "completely unrelated zebra words", ""]


def test_hybrid_round_trip(tmp_path: Path) -> None:
    import knnroute
    from knnroute.production.persist import read_metadata

    prod, _ = hybrid_router()
    before = [prod.route_prompts(QUERIES, lam) for lam in (0.0, 100.0, 1e4)]  # type: ignore[attr-defined]
    dec_before = prod.route_prompt(QUERIES[0], 50.0)  # type: ignore[attr-defined]
    path = prod.save(tmp_path / "h.knnr")  # type: ignore[attr-defined]
    meta = read_metadata(path)
    assert set(meta["arrays"]) == {"embeddings", "scores", "costs", "lexical_components", "lexical_idf"}
    lex = meta["embedder"]["lexical"]
    assert meta["arrays"]["lexical_components"]["shape"] == [12, lex["n_terms"]]
    assert meta["arrays"]["lexical_idf"]["shape"] == [1, lex["n_terms"]]
    assert lex["w"] == 0.75 and lex["dense"]["spec"] == "fake-dense-test"
    loaded = knnroute.load(path)
    assert loaded.encoder.identity == prod.encoder.identity  # type: ignore[attr-defined]
    after = [loaded.route_prompts(QUERIES, lam) for lam in (0.0, 100.0, 1e4)]
    assert after == before
    np.testing.assert_allclose(loaded.embed(QUERIES), prod.embed(QUERIES), atol=1e-6)  # type: ignore[attr-defined]
    dec = loaded.route_prompt(QUERIES[0], 50.0)
    assert dec.model == dec_before.model
    # re-saving the loaded router keeps the lexical state (same identity, same arrays)
    again = knnroute.load(loaded.save(tmp_path / "h2.knnr"))
    assert again.route_prompts(QUERIES, 100.0) == before[1]
    # the dense half can be given explicitly (a dense embedder without a spec), or a whole wrong one refused
    explicit = knnroute.load(path, embedder=fake_dense())
    assert explicit.route_prompts(QUERIES, 100.0) == before[1]
    from knnroute.embed.encoders import CallableEmbedder

    other = CallableEmbedder(lambda t: np.ones((len(t), 8)), identity="other-dense", dim=8)
    with pytest.raises(ValueError, match="mismatch"):
        knnroute.load(path, embedder=other)


def _old_persist() -> object:
    """persist.py as it was before the lexical arrays (git: the commit before this feature), or skip."""
    import importlib.util
    import subprocess

    try:
        src = subprocess.run(["git", "-C", str(ROOT), "show", "fcc481d:python/knnroute/production/persist.py"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no git history with the pre-lexical persist.py")
    f = Path(__file__).with_name("_old_persist_tmp.py")
    spec = importlib.util.spec_from_loader("_old_persist", loader=None)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    exec(compile(src, str(f), "exec"), mod.__dict__)
    return mod


@pytest.mark.parametrize("old_writer", [False, True])
def test_old_dense_file_still_loads(tmp_path: Path, old_writer: bool) -> None:
    """A dense router file (no optional arrays; also written by the pre-lexical persist.py) loads, routes."""
    import knnroute
    from knnroute.production import ProductionRouter
    from knnroute.production.persist import read_metadata
    from knnroute.routers.knn import KNNRouter

    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 8)).astype(np.float32)
    S, C = rng.random((40, 2)), rng.random((40, 2))
    dense = _register_fake()
    p = ProductionRouter(KNNRouter(k=3).fit(X, S, C, model_names=["a", "b"]), embedder=dense)
    path = tmp_path / "d.knnr"
    if old_writer:
        _old_persist().write_state(p.state(), path)  # type: ignore[attr-defined]
    else:
        p.save(path)
    assert set(read_metadata(path)["arrays"]) == {"embeddings", "scores", "costs"}
    assert "lexical" not in read_metadata(path)["embedder"]
    r = knnroute.load(path)
    assert r.encoder.lexical is None
    np.testing.assert_array_equal(r.route(X[:5], 1.0), p.route(X[:5], 1.0))
    assert list(r.route_prompts(QUERIES, 1.0)) == list(p.route_prompts(QUERIES, 1.0))


def _resign(blob: bytes, meta: dict, payload: bytes | None = None) -> bytes:  # type: ignore[type-arg]
    """The file with a new header and payload, both digests re-signed: reaches the checks. When the edited
    header no longer fits the original room, the payload moves down by whole alignment units and every
    array offset with it (what an edit did to one offset, relative to the others, is kept)."""
    import hashlib
    import json
    import struct

    from knnroute.production.persist import ALIGN, MAGIC, PREAMBLE_SIZE

    p0 = meta["payload_offset"]
    payload = blob[p0:] if payload is None else payload
    meta = dict(meta, payload_sha256=hashlib.sha256(payload).hexdigest())
    while True:
        header = json.dumps(meta, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
        if len(header) <= meta["payload_offset"] - PREAMBLE_SIZE:
            break
        meta = json.loads(json.dumps(meta))
        meta["payload_offset"] += ALIGN
        for a in meta["arrays"].values():
            a["offset"] += ALIGN
    header += b" " * (meta["payload_offset"] - PREAMBLE_SIZE - len(header))
    return struct.pack("<8sII32s", MAGIC, 1, len(header), hashlib.sha256(header).digest()) + header + payload


def test_tampered_lexical_arrays_refused(tmp_path: Path) -> None:
    import copy
    import json
    import struct

    from knnroute.production import loads
    from knnroute.production.persist import PREAMBLE_SIZE, RouterFileError

    prod, _ = hybrid_router()
    blob = prod.save(tmp_path / "h.knnr").read_bytes()  # type: ignore[attr-defined]
    hlen = struct.unpack_from("<8sII32s", blob, 0)[2]
    meta = json.loads(blob[PREAMBLE_SIZE : PREAMBLE_SIZE + hlen])
    assert loads(_resign(blob, meta)).route_prompts(QUERIES, 1.0)  # the re-signing itself is fine
    V = meta["embedder"]["lexical"]["n_terms"]
    arr = meta["arrays"]

    def edited(fn) -> bytes:  # type: ignore[no-untyped-def]
        m = copy.deepcopy(meta)
        fn(m)
        return _resign(blob, m)

    cases = {
        "dtype": lambda m: m["arrays"]["lexical_components"].update(dtype="<f8"),
        "dtype-idf": lambda m: m["arrays"]["lexical_idf"].update(dtype="|u1"),
        "shape": lambda m: m["arrays"]["lexical_components"].update(shape=[11, V]),
        "shape-idf": lambda m: m["arrays"]["lexical_idf"].update(shape=[V, 1]),
        "offset-misaligned": lambda m: m["arrays"]["lexical_idf"].update(offset=arr["lexical_idf"]["offset"] + 4),
        "offset-outside": lambda m: m["arrays"]["lexical_idf"].update(offset=arr["lexical_idf"]["offset"] + (1 << 20)),
        "overlap": lambda m: m["arrays"]["lexical_idf"].update(offset=arr["lexical_components"]["offset"]),
        "overlap-scores": lambda m: m["arrays"]["lexical_components"].update(offset=arr["scores"]["offset"]),
        "one-only": lambda m: m["arrays"].pop("lexical_idf"),
        "no-facts": lambda m: m["embedder"].pop("lexical"),
        "no-arrays": lambda m: [m["arrays"].pop("lexical_idf"), m["arrays"].pop("lexical_components")],
        "k-cap": lambda m: m["embedder"]["lexical"].update(k=5000),
        "k-bool": lambda m: m["embedder"]["lexical"].update(k=True),
        "vocab-short": lambda m: m["embedder"]["lexical"].update(vocabulary=m["embedder"]["lexical"]["vocabulary"][1:]),
        "vocab-dup": lambda m: m["embedder"]["lexical"]["vocabulary"].__setitem__(
            1, m["embedder"]["lexical"]["vocabulary"][0]
        ),
        "sha": lambda m: m["embedder"]["lexical"].update(sha256="0" * 64),
        "w": lambda m: m["embedder"]["lexical"].update(w=1.5),
        "identity": lambda m: m["embedder"].update(identity="fake-dense-v1"),
        "settings": lambda m: m["embedder"]["lexical"]["settings"].update(lowercase=False),
    }
    refused = {}
    for name, fn in cases.items():
        try:
            loads(edited(fn))
        except RouterFileError as e:
            refused[name] = str(e)
    assert set(refused) == set(cases), f"tampered files loaded: {sorted(set(cases) - set(refused))}"
    assert "dtype" in refused["dtype"] and "shape" in refused["shape"] and "overlap" in refused["overlap"]
    assert "outside the payload" in refused["offset-outside"] and "sha256" in refused["sha"]
    # payload tampering: a changed idf value re-signed is caught by the model's sha256 ...
    p0 = meta["payload_offset"]
    payload = bytearray(blob[p0:])
    off = arr["lexical_idf"]["offset"] - p0
    payload[off : off + 4] = struct.pack("<f", 7.5)
    with pytest.raises(RouterFileError, match="sha256"):
        loads(_resign(blob, meta, bytes(payload)))
    # ... and without re-signing, by the payload digest
    with pytest.raises(RouterFileError, match="SHA-256"):
        loads(blob[:p0] + bytes(payload))
    # a NaN in the components (re-signed): refused
    off = arr["lexical_components"]["offset"] - p0
    payload = bytearray(blob[p0:])
    payload[off : off + 4] = struct.pack("<f", float("nan"))
    with pytest.raises(RouterFileError):
        loads(_resign(blob, meta, bytes(payload)))


# ------------------------------------------------------------------------------------ knnroute fit
def _topic_csv(tmp_path: Path, n: int = 300) -> Path:
    """Long-format data whose best model depends on the prompt's topic words (lexical signal only: the
    dense embedder below is a hash of the whole text, neighbours by it are random)."""
    from knnroute.data import RoutingDataset, save_long

    rng = np.random.default_rng(0)
    topics = {
        "math": "integral derivative equation algebra theorem proof",
        "code": "python function compile bug stack array",
        "poem": "sonnet rhyme verse stanza metaphor poet",
    }
    filler = "please tell me about the following thing today now quickly".split()
    prompts, scores = [], []
    for i in range(n):
        t = list(topics)[i % 3]
        words = list(rng.choice(topics[t].split(), 3)) + list(rng.choice(filler, 4))
        rng.shuffle(words)
        prompts.append(f"q{i} " + " ".join(words))
        s = np.full(3, 0.1)
        s[i % 3] = 0.9
        scores.append(np.clip(s + rng.normal(0, 0.05, 3), 0, 1))
    ds = RoutingDataset(name="topics", model_names=["m-math", "m-code", "m-poem"], scores=np.array(scores),
                        costs=np.full((n, 3), 1e-4) * np.array([1.0, 1.1, 1.2]), prompts=prompts)
    return save_long(ds, tmp_path / "topics.csv")


def _register_hash_dense() -> None:
    from knnroute.embed.encoders import EMBEDDERS, CallableEmbedder, register_embedder

    def fn(texts: list[str]) -> np.ndarray:
        import hashlib

        seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little") for t in texts]
        return np.stack([np.random.default_rng(s).normal(size=16) for s in seeds]).astype(np.float32)

    if "hash-dense-test" not in EMBEDDERS:
        def make() -> CallableEmbedder:
            e = CallableEmbedder(fn, identity="hash-dense-test-v1", dim=16)
            e.spec = "hash-dense-test"  # type: ignore[attr-defined]
            return e

        register_embedder("hash-dense-test", make)


def test_fit_writes_a_hybrid_router(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sklearn")
    import json

    import knnroute
    from knnroute.cli import main
    from knnroute.production.persist import read_metadata

    monkeypatch.setenv("KNNROUTE_CACHE", str(tmp_path / "cache"))
    _register_hash_dense()
    csv = _topic_csv(tmp_path)

    def fit(*extra: str) -> tuple[dict, Path]:  # type: ignore[type-arg]
        import contextlib
        import io

        out = tmp_path / f"r{len(extra)}.knnr"
        buf, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
            rc = main(["fit", "--data", str(csv), "--out", str(out), "--embedder", "hash-dense-test",
                       "--no-progress", *extra])
        assert rc == 0
        assert "similarity: " in err.getvalue()
        return json.loads(buf.getvalue()), out

    rep, path = fit()
    assert rep["lexical_weight"] in (0.75, 0.5)  # the topic words are the only signal
    assert set(rep["lexical_val_auc"]) == {"1", "0.75", "0.5"}
    assert rep["lexical_val_auc"]["1"] < rep["lexical_val_auc"][f"{rep['lexical_weight']:g}"]
    meta = read_metadata(path)
    assert "lexical_components" in meta["arrays"]
    assert meta["embedder"]["lexical"]["w"] == rep["lexical_weight"]
    assert meta["meta"]["lexical_weight"] == rep["lexical_weight"]
    assert meta["dim"] == 16 + meta["embedder"]["lexical"]["k"]
    r = knnroute.load(path)
    picks = r.route_prompts(["integral theorem proof please", "python compile bug", "sonnet rhyme poet"], 0.0)
    assert list(picks) == ["m-math", "m-code", "m-poem"]

    rep_d, path_d = fit("--no-lexical")
    assert rep_d["lexical_weight"] == 1.0 and "no-lexical" in rep_d["lexical_note"]
    meta_d = read_metadata(path_d)
    assert set(meta_d["arrays"]) == {"embeddings", "scores", "costs"} and meta_d["dim"] == 16
    assert "lexical" not in meta_d["embedder"]
    assert rep_d["file_bytes"] < rep["file_bytes"]
    rep_k, _ = fit("--k", "5")
    assert rep_k["lexical_weight"] == 1.0 and "--k" in rep_k["lexical_note"]


def test_service_routes_prompts_with_the_hybrid(tmp_path: Path) -> None:
    """``knnroute serve``'s app over a hybrid router file: /route with a prompt = the router's decision."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    import knnroute
    from knnroute.service.app import create_app

    prod, _ = hybrid_router()
    path = prod.save(tmp_path / "h.knnr")  # type: ignore[attr-defined]
    loaded = knnroute.load(path)
    with TestClient(create_app(knnroute.load(path))) as c:
        assert c.get("/health").json()["prompts"] is True
        for q in QUERIES[:4]:
            r = c.post("/route", json={"prompt": q, "lambda": 100.0})
            assert r.status_code == 200, r.text
            assert r.json()["model"] == loaded.route_prompt(q, 100.0).model
