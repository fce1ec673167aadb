"""Lexical vectors for a hybrid similarity: TF-IDF of word 1-2-grams reduced by LSA, fitted on training prompts.

The hybrid similarity of two prompts is ``w cos_dense + (1 - w) cos_lexical``. :func:`mix` builds rows whose
dot product is exactly that (``[sqrt(w) x_dense, sqrt(1 - w) x_lexical]`` of unit rows is itself a unit row),
so the core's cosine top-k serves the hybrid similarity unchanged. Issue 21's experiments
(``experiments/quality_ideas.py``, ``docs/quality.md``) found it the one idea that raised the tuned kNN router on most
of the nine datasets; the evaluator's ``knn-tuned-lex`` row chooses ``w`` on validation, and ``knnroute fit``
deploys it (:class:`HybridLexicalEmbedder`, stored in the router file).

The vectorizer and the LSA projection are fitted on the training prompts only (never validation or test);
every prompt is then transformed. :meth:`LexicalModel.fit` needs scikit-learn (the ``eval`` extra);
:meth:`LexicalModel.transform` needs only NumPy and the core (a serving install may lack scikit-learn) and
reproduces scikit-learn's ``TfidfVectorizer.transform`` + ``TruncatedSVD.transform``: ASCII prompts in the core
(``knnroute_core.LexicalIndex``: the prompt's terms looked up in a hash table, only their LSA rows read), the
rest in NumPy (:meth:`LexicalModel.transform_numpy`).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from knnroute.embed.encoders import Embedder, embedder_spec

__all__ = [
    "LEXICAL_DIM",
    "LEXICAL_WEIGHTS",
    "MAX_CHARS",
    "MAX_COMPONENTS",
    "MAX_VOCABULARY",
    "HybridLexicalEmbedder",
    "LexicalModel",
    "hybrid_identity",
    "lexical_from_file",
    "lexical_vectors",
    "mix",
]

# Dense weights w tried besides w = 1 (dense only); chosen on validation like any kNN setting.
LEXICAL_WEIGHTS: tuple[float, ...] = (0.75, 0.5)
LEXICAL_DIM = 256
#: a prompt is transformed from its first MAX_CHARS characters (as the static embedder; bounds the work a
#: hostile prompt can cause)
MAX_CHARS = 32_768
#: caps on a loaded (untrusted) model: vocabulary terms V and LSA components k
MAX_VOCABULARY = 200_000
MAX_COMPONENTS = 1_024
MAX_TERM_CHARS = 1_024
#: the evaluator's vocabulary cap (kept: its results must not move); ``knnroute fit`` uses FIT_MAX_FEATURES
EVAL_MAX_FEATURES = 200_000
FIT_MAX_FEATURES = 50_000
#: scikit-learn's default token pattern (words of two or more word characters)
TOKEN_PATTERN = r"(?u)\b\w\w+\b"
_SETTINGS: dict[str, Any] = {
    "lowercase": True,
    "token_pattern": TOKEN_PATTERN,
    "ngram_range": [1, 2],
    "sublinear_tf": True,
    "norm": "l2",
    "min_df": 2,
    "max_chars": MAX_CHARS,
}
_TOKEN = re.compile(TOKEN_PATTERN)


def _unit(A: NDArray[np.float64]) -> NDArray[np.float32]:
    n = np.linalg.norm(A, axis=1, keepdims=True)
    return (A / np.where(n > 0, n, 1.0)).astype(np.float32)


def _terms(text: str) -> list[str]:
    """Word unigrams and bigrams (joined by one space) of the lowercased text, as scikit-learn's analyzer."""
    toks = _TOKEN.findall(text[:MAX_CHARS].lower())
    return toks + [f"{a} {b}" for a, b in zip(toks, toks[1:], strict=False)]


class LexicalModel:
    """A fitted TF-IDF (word 1-2-grams, sublinear tf, l2) + LSA projection, as plain state.

    Attributes
    ----------
    vocabulary : list of str
        The terms, in column order (V).
    idf : (V,) float32
        Inverse document frequencies (scikit-learn's smoothed idf).
    components : (k, V) float32
        LSA directions (``TruncatedSVD.components_``).
    settings : dict
        Tokenisation settings (fixed: lowercase, ``TOKEN_PATTERN``, 1-2-grams, sublinear tf, l2, min_df=2).
    """

    def __init__(self, vocabulary: Sequence[str], idf: ArrayLike, components: ArrayLike,
                 settings: Mapping[str, Any] | None = None) -> None:
        vocab = list(vocabulary)
        idf_a = np.ascontiguousarray(np.asarray(idf, dtype=np.float32).reshape(-1))
        comp = np.asarray(components, dtype=np.float32)
        V = len(vocab)
        if comp.ndim != 2 or comp.shape[1] != V or idf_a.shape != (V,):
            raise ValueError(f"lexical model: {V} terms, idf {idf_a.shape}, components {comp.shape} disagree")
        if not 1 <= V <= MAX_VOCABULARY or not 1 <= comp.shape[0] <= MAX_COMPONENTS:
            raise ValueError(f"lexical model: V={V}, k={comp.shape[0]} outside 1..{MAX_VOCABULARY} / "
                             f"1..{MAX_COMPONENTS}")
        if not all(isinstance(t, str) and 0 < len(t) <= MAX_TERM_CHARS for t in vocab):
            raise ValueError(f"lexical model: vocabulary terms must be non-empty strings of at most "
                             f"{MAX_TERM_CHARS} characters")
        index = {t: i for i, t in enumerate(vocab)}
        if len(index) != V:
            raise ValueError("lexical model: vocabulary terms must be distinct")
        if not (np.isfinite(idf_a).all() and (idf_a > 0).all()):
            raise ValueError("lexical model: idf values must be finite and > 0")
        if not np.isfinite(comp).all():
            raise ValueError("lexical model: components must be finite")
        got = dict(settings) if settings is not None else dict(_SETTINGS)
        if got != _SETTINGS:
            raise ValueError(f"lexical model: unsupported settings {got!r} (this knnroute reads {_SETTINGS!r})")
        self.vocabulary = vocab
        self.idf = idf_a
        self.settings = got
        self._index = index
        self._comp_t = np.ascontiguousarray(comp.T)  # (V, k): a term's column is one contiguous row
        self._sha256: str | None = None
        self._core: Any = None  # knnroute_core.LexicalIndex, built on the first transform

    @property
    def components(self) -> NDArray[np.float32]:
        """(k, V) float32 (a view of the stored transpose)."""
        return self._comp_t.T

    @property
    def dim(self) -> int:
        return int(self._comp_t.shape[1])

    @property
    def n_terms(self) -> int:
        return len(self.vocabulary)

    # ------------------------------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, texts: Sequence[str], dim: int = LEXICAL_DIM, seed: int = 0,
            max_features: int = FIT_MAX_FEATURES) -> LexicalModel | None:
        """Fit on (training) texts; None when they share no term or are too few for one component.

        ``max_features`` keeps the most frequent terms (bounds V, hence the router file: k x V x 4 bytes).

        The same numbers as scikit-learn's ``TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2,
        max_features=...)`` followed by ``TruncatedSVD(dim, random_state=seed)`` (:func:`_tfidf`,
        :func:`_randomized_components`: the same steps on SciPy, without importing scikit-learn, whose import
        alone took longer than the fit; ``tests/test_lexical.py`` compares them bit for bit).
        """
        import scipy.linalg  # noqa: F401  (loaded before threadpool_limits below, so its OpenBLAS is limited too)
        from threadpoolctl import threadpool_limits

        if not 1 <= int(max_features) <= MAX_VOCABULARY:
            raise ValueError(f"max_features must be in 1..{MAX_VOCABULARY}, got {max_features}")
        docs = [str(t)[:MAX_CHARS] for t in texts]
        if len(docs) < 3:
            return None
        fitted = _tfidf(docs, int(max_features))
        if fitted is None:  # empty vocabulary: no term in two training prompts
            return None
        vocab, idf, T = fitted
        k = min(int(dim), T.shape[1] - 1, len(docs) - 1, MAX_COMPONENTS)
        if k < 1:
            return None
        # One BLAS thread: the randomized SVD's LU/QR steps are small (V x (k + 10)), and OpenBLAS's threads
        # spin when the cores are busy (two evaluation workers with two threads each on two cores took 10x
        # longer). It also makes the components independent of the machine's core count: OpenBLAS's blocked
        # LU/QR round differently with another thread count (about 1e-9 here).
        with threadpool_limits(limits=1):
            comp = _randomized_components(T, k, int(seed))
        return cls(vocab, idf, comp)

    # ------------------------------------------------------------------------------------- transform
    def transform(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """(n, k) float32 unit rows (a prompt with no known term: a zero row).

        ASCII prompts go through the compiled core (``knnroute_core.LexicalIndex``: the same terms, tf-idf and
        projection over the prompt's own terms' LSA rows, summed in double); any other prompt through
        :meth:`transform_numpy` (Python's Unicode word characters and lowercasing). The two agree to float32
        rounding (``tests/test_lexical.py``).
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of str, not one str")
        core = self._core_index()
        if core is None:
            return self.transform_numpy(texts)
        texts = texts if isinstance(texts, list) else list(texts)
        try:
            out, ok = core.transform(texts, MAX_CHARS)
        except TypeError:  # not a str: the NumPy path names the item
            return self.transform_numpy(texts)
        if not ok.all():
            rest = np.flatnonzero(~ok)
            out[rest] = self.transform_numpy([texts[i] for i in rest])
        return out

    def _core_index(self) -> Any:
        if self._core is None:
            try:
                import knnroute_core

                self._core = knnroute_core.LexicalIndex(self.vocabulary, self.idf, self._comp_t)
            except (ImportError, AttributeError):  # pragma: no cover - an older core without it
                self._core = False
        return self._core or None

    def transform_numpy(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """:meth:`transform` in NumPy alone, for every prompt (the reference the core path is tested against)."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of str, not one str")
        out = np.zeros((len(texts), self.dim), dtype=np.float64)
        idf, comp_t, index = self.idf, self._comp_t, self._index
        for r, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"item {r} is {type(text).__name__}, expected str")
            counts = Counter(i for i in map(index.get, _terms(text)) if i is not None)
            if not counts:
                continue
            cols = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
            tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
            vals = (1.0 + np.log(tf)) * idf[cols].astype(np.float64)
            vals /= math.sqrt(float(vals @ vals))
            out[r] = vals @ comp_t[cols].astype(np.float64)
        return _unit(out)

    # ------------------------------------------------------------------------------------- state
    def sha256(self) -> str:
        """SHA-256 of the whole state (vocabulary, idf, components, settings): the model's identity."""
        if self._sha256 is None:
            h = hashlib.sha256()
            h.update(repr(sorted(self.settings.items())).encode())
            h.update(str(len(self.vocabulary)).encode() + b"\0")
            for t in self.vocabulary:
                h.update(t.encode("utf-8") + b"\0")
            h.update(self.idf.astype("<f4").tobytes())
            h.update(np.ascontiguousarray(self.components, dtype="<f4").tobytes())
            self._sha256 = h.hexdigest()
        return self._sha256

    def __repr__(self) -> str:
        return f"LexicalModel(V={self.n_terms}, k={self.dim}, sha256={self.sha256()[:12]})"


def _tfidf(docs: Sequence[str], max_features: int) -> tuple[list[str], NDArray[np.float64], Any] | None:
    """``TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, max_features=max_features)``'s
    ``fit_transform`` (scikit-learn 1.x: count, sort the vocabulary, keep terms in >= 2 documents and the
    ``max_features`` most frequent, sublinear tf x smoothed idf, rows l2-normalised), in the same order of
    operations: ``(vocabulary in column order, idf (V,), the normalised CSR matrix)``; None when no term is
    left."""
    from array import array

    import scipy.sparse as sp

    counted = _count_core(docs)
    if counted is not None:  # ASCII documents: the same counts from the core
        vocabulary = {t: j for j, t in enumerate(counted[0])}
        j_idx, vals, ptr = counted[1], counted[2].astype(np.intc), counted[3].astype(np.int32)
    else:
        vocabulary = {}
        j_indices: list[int] = []
        indptr = [0]
        values = array("i")
        for doc in docs:
            counts: dict[int, int] = {}
            for term in _terms(doc):
                j = vocabulary.setdefault(term, len(vocabulary))
                counts[j] = counts.get(j, 0) + 1
            j_indices.extend(counts.keys())
            values.extend(counts.values())
            indptr.append(len(j_indices))
        j_idx, vals = np.asarray(j_indices, dtype=np.int32), np.frombuffer(values, dtype=np.intc)
        ptr = np.asarray(indptr, dtype=np.int32)
    if not vocabulary:
        return None
    X = sp.csr_array((vals, j_idx, ptr), shape=(len(ptr) - 1, len(vocabulary)), dtype=np.float64)
    X.sort_indices()
    X = sp.csr_matrix(X)  # scikit-learn's default sparse interface (spmatrix) from here on
    # columns in term order
    terms = sorted(vocabulary.items())
    map_index = np.empty(len(terms), dtype=X.indices.dtype)
    for new, (_, old) in enumerate(terms):
        map_index[old] = new
    X.indices = map_index.take(X.indices, mode="clip")
    # min_df = 2 (max_df = 1.0 keeps all), then the max_features most frequent
    dfs = np.bincount(X.indices, minlength=X.shape[1])
    mask = np.ones(len(dfs), dtype=bool)
    mask &= dfs <= 1.0 * X.shape[0]
    mask &= dfs >= 2
    if mask.sum() > max_features:
        tfs = np.asarray(X.sum(axis=0)).ravel()
        mask_inds = (-tfs[mask]).argsort()[:max_features]
        new_mask = np.zeros(len(dfs), dtype=bool)
        new_mask[np.where(mask)[0][mask_inds]] = True
        mask = new_mask
    kept = np.where(mask)[0]
    if len(kept) == 0:
        return None
    X = X[:, kept]
    vocab = [terms[i][0] for i in kept]
    # smoothed idf, sublinear tf, l2 rows
    df = np.bincount(X.indices, minlength=X.shape[1]).astype(np.float64)
    df += 1.0
    idf = np.full_like(df, fill_value=X.shape[0] + 1, dtype=np.float64)
    idf /= df
    np.log(idf, out=idf)
    idf += 1.0
    np.log(X.data, X.data)
    X.data += 1.0
    X.data *= idf[X.indices]
    data, ptr = X.data, X.indptr
    for i in range(X.shape[0]):  # sequential sums of squares per row, as scikit-learn's row normaliser
        a, b = ptr[i], ptr[i + 1]
        if a == b:
            continue
        ss = float(np.cumsum(data[a:b] * data[a:b])[-1])
        if ss == 0.0:
            continue
        data[a:b] /= math.sqrt(ss)
    return vocab, idf, X


def _count_core(docs: Sequence[str]) -> Any:
    """``knnroute_core.count_terms`` of the documents (None: a core without it)."""
    try:
        import knnroute_core

        # non-ASCII documents are tokenised here (Python's Unicode word characters and lowercasing)
        return knnroute_core.count_terms([d if d.isascii() else _terms(d) for d in docs])
    except (ImportError, AttributeError):  # pragma: no cover - an older core
        return None


def _randomized_components(T: Any, k: int, seed: int) -> NDArray[np.float64]:
    """``TruncatedSVD(n_components=k, random_state=seed).fit(T).components_`` (randomized: 5 LU-normalised
    power iterations, 10 oversamples; scikit-learn 1.x's ``_randomized_svd`` and ``svd_flip`` on the right
    vectors), the same SciPy calls in the same order."""
    import scipy.linalg as la

    rs = np.random.RandomState(seed)
    n_random = k + 10
    transpose = T.shape[0] < T.shape[1]
    M = T.T if transpose else T
    Q = rs.normal(size=(M.shape[1], n_random))
    for _ in range(5):
        Q, _ = la.lu(M @ Q, permute_l=True, check_finite=False)
        Q, _ = la.lu(M.T @ Q, permute_l=True, check_finite=False)
    Q, _ = la.qr(M @ Q, mode="economic", check_finite=False)
    B = Q.T @ M
    Uhat, _, Vt = la.svd(B, full_matrices=False, lapack_driver="gesdd")
    U = Q @ Uhat
    VT = U[:, :k].T if transpose else Vt[:k, :]
    # svd_flip(u_based_decision=False): each component's largest-magnitude entry positive
    rows = np.argmax(np.abs(VT), axis=1)
    signs = np.sign(VT[np.arange(VT.shape[0]), rows])
    return VT * signs[:, None]


def lexical_vectors(
    texts: Sequence[str], train: ArrayLike, dim: int = LEXICAL_DIM, seed: int = 0
) -> NDArray[np.float32] | None:
    """Unit LSA rows of every prompt: word 1-2-gram TF-IDF (sublinear tf, terms in >= 2 training prompts)
    fitted on ``texts[train]``, projected on its top ``dim`` singular directions (seeded): a
    :class:`LexicalModel` fitted on the training prompts, transforming every prompt.

    Returns None when the training prompts share no term (nothing lexical to compare). A prompt with no
    known term gets a zero row (lexical similarity 0 to everything).
    """
    rows = np.asarray(train, dtype=np.int64)
    if len(texts) == 0 or rows.size < 3:
        return None
    model = LexicalModel.fit([str(texts[i]) for i in rows], dim=dim, seed=seed, max_features=EVAL_MAX_FEATURES)
    return None if model is None else model.transform([str(t) for t in texts])


def mix(dense: ArrayLike, lexical: ArrayLike, w: float) -> NDArray[np.float32]:
    """Rows whose dot product is ``w cos_dense + (1 - w) cos_lexical`` (both inputs unit rows; w in [0, 1])."""
    if not 0.0 <= float(w) <= 1.0:
        raise ValueError(f"the dense weight w must be in [0, 1], got {w}")
    A = np.asarray(dense, dtype=np.float32)
    B = np.asarray(lexical, dtype=np.float32)
    if A.shape[0] != B.shape[0]:
        raise ValueError(f"dense has {A.shape[0]} rows, lexical {B.shape[0]}")
    # float32 x float64 weight, computed in float64 and rounded once to float32: the rows of
    # concatenate([sqrt(w) A, sqrt(1 - w) B]).astype(float32), written in place (the single-prompt path)
    out = np.empty((A.shape[0], A.shape[1] + B.shape[1]), dtype=np.float32)
    np.multiply(A, np.sqrt(np.float64(w)), out=out[:, : A.shape[1]], casting="unsafe")
    np.multiply(B, np.sqrt(np.float64(1.0 - w)), out=out[:, A.shape[1]:], casting="unsafe")
    return out


def _check_w(w: Any) -> float:
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 < float(w) < 1.0:
        raise ValueError(f"the hybrid's dense weight w must be a number in (0, 1), got {w!r}")
    return float(w)


def hybrid_identity(dense_identity: str, w: float, lexical_sha256: str) -> str:
    """The identity of a :class:`HybridLexicalEmbedder` (dense identity, ``w``, lexical state digest)."""
    return f"hybrid-lexical(w={w:g};dense={dense_identity};lexical={lexical_sha256})"


class HybridLexicalEmbedder(Embedder):
    """Dense embedder + :class:`LexicalModel` behind one :class:`~knnroute.embed.Embedder`: the dot product
    of two outputs is ``w cos_dense + (1 - w) cos_lexical`` (:func:`mix`; rows re-normalised as the core
    does, which matters only for prompts with no known term).

    ``identity`` names the dense identity, ``w`` and the SHA-256 of the lexical state, so neither caches nor
    router files ever mix two lexical models. It has fitted state, so no spec string rebuilds it
    (``spec = None``): a router file stores the lexical arrays (:mod:`knnroute.production.persist`).
    """

    cacheable = False  # the dense block is cached by its own embedder; the lexical part is cheap
    spec = None

    def __init__(self, dense: Any, lexical: LexicalModel, w: float) -> None:
        from knnroute.embed.encoders import get_embedder

        if not isinstance(lexical, LexicalModel):
            raise TypeError(f"lexical must be a LexicalModel, got {type(lexical).__name__}")
        self.dense = get_embedder(dense)
        if getattr(self.dense, "modality", "text") != "text":
            raise ValueError("the lexical hybrid needs a text embedder")
        self.lexical = lexical
        self.w = _check_w(w)
        self.identity = hybrid_identity(self.dense.identity, self.w, lexical.sha256())

    @property
    def dim(self) -> int:
        return int(self.dense.dim) + self.lexical.dim

    def combine(self, dense_rows: ArrayLike, texts: Sequence[str],
                lexical_rows: ArrayLike | None = None) -> NDArray[np.float32]:
        """Hybrid rows from already computed dense rows of ``texts`` (``knnroute fit`` reuses its cache);
        ``lexical_rows``: ``self.lexical.transform(texts)`` when the caller has it already (one transform for
        every ``w`` tried)."""
        lex = self.lexical.transform(texts) if lexical_rows is None else lexical_rows
        out = mix(dense_rows, lex, self.w)
        n = np.linalg.norm(out, axis=1, keepdims=True)
        n[~(n > 0)] = 1.0
        out /= n
        return out

    def encode(self, items: Sequence[Any], batch_size: int = 64, progress: Any = True) -> np.ndarray:
        items = list(items)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.combine(self.dense.encode(items, batch_size=batch_size, progress=progress), items)

    def _encode(self, items: Sequence[Any], batch_size: int) -> np.ndarray:  # pragma: no cover - unused
        return self.encode(items, batch_size, progress=False)

    def encode_one(self, text: Any) -> np.ndarray:
        if not isinstance(text, str):
            raise TypeError(f"prompt must be a str, got {type(text).__name__}")
        return self.combine(self.dense.encode_one(text)[None, :], [text])[0]

    # ------------------------------------------------------------------------------- router files
    def file_info(self) -> dict[str, Any]:
        """JSON facts a router file records (the arrays go beside them: :meth:`file_arrays`)."""
        return {
            "w": self.w,
            "dense": {"identity": self.dense.identity, "spec": embedder_spec(self.dense)},
            "vocabulary": list(self.lexical.vocabulary),
            "settings": dict(self.lexical.settings),
            "k": self.lexical.dim,
            "n_terms": self.lexical.n_terms,
            "sha256": self.lexical.sha256(),
        }

    def file_arrays(self) -> dict[str, np.ndarray]:
        return {
            "lexical_components": np.ascontiguousarray(self.lexical.components, dtype="<f4"),
            "lexical_idf": np.ascontiguousarray(self.lexical.idf.reshape(1, -1), dtype="<f4"),
        }


def lexical_from_file(info: Mapping[str, Any], components: np.ndarray, idf: np.ndarray) -> LexicalModel:
    """The :class:`LexicalModel` of a router file's ``embedder.lexical`` facts and arrays (validated: the
    vocabulary, shapes, caps and the recorded SHA-256 must agree). Raises ValueError."""
    if not isinstance(info, Mapping):
        raise ValueError("embedder 'lexical' must be an object")
    vocab = info.get("vocabulary")
    if not isinstance(vocab, list):
        raise ValueError("embedder lexical 'vocabulary' must be a list of strings")
    settings = info.get("settings")
    if not isinstance(settings, dict):
        raise ValueError("embedder lexical 'settings' must be an object")
    if components.ndim != 2 or idf.shape != (1, components.shape[1]):
        raise ValueError(f"lexical arrays: components {components.shape}, idf {idf.shape} disagree")
    for key, want in (("k", components.shape[0]), ("n_terms", components.shape[1])):
        got = info.get(key)
        if isinstance(got, bool) or got != want:
            raise ValueError(f"embedder lexical {key!r} is {got!r}, the arrays say {want}")
    _check_w(info.get("w"))
    dense = info.get("dense")
    if not (isinstance(dense, dict) and isinstance(dense.get("identity"), str) and dense["identity"]
            and (dense.get("spec") is None or isinstance(dense["spec"], str))):
        raise ValueError("embedder lexical 'dense' must be an object with an identity (and a spec)")
    model = LexicalModel(vocab, np.array(idf[0], dtype=np.float32), np.array(components, dtype=np.float32),
                         settings)
    if info.get("sha256") != model.sha256():
        raise ValueError("embedder lexical 'sha256' does not match the stored vocabulary and arrays")
    return model
