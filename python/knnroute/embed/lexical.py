"""Lexical vectors for a hybrid similarity: TF-IDF of word 1-2-grams reduced by LSA, fitted on training prompts.

The hybrid similarity of two prompts is ``w cos_dense + (1 - w) cos_lexical``. :func:`mix` builds rows whose
dot product is exactly that (``[sqrt(w) x_dense, sqrt(1 - w) x_lexical]`` of unit rows is itself a unit row),
so the core's cosine top-k serves the hybrid similarity unchanged. Issue 21's experiments
(``bench/quality_ideas.py``, ``docs/quality.md``) found it the one idea that raised the tuned kNN router on most
of the nine datasets; the evaluator's ``knn-tuned-lex`` row chooses ``w`` on validation.

The vectorizer and the LSA projection are fitted on the training prompts only (never validation or test);
every prompt is then transformed. scikit-learn is imported on first use (the ``eval`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["LEXICAL_DIM", "LEXICAL_WEIGHTS", "lexical_vectors", "mix"]

# Dense weights w tried besides w = 1 (dense only); chosen on validation like any kNN setting.
LEXICAL_WEIGHTS: tuple[float, ...] = (0.75, 0.5)
LEXICAL_DIM = 256


def _unit(A: NDArray[np.float64]) -> NDArray[np.float32]:
    n = np.linalg.norm(A, axis=1, keepdims=True)
    return (A / np.where(n > 0, n, 1.0)).astype(np.float32)


def lexical_vectors(
    texts: Sequence[str], train: ArrayLike, dim: int = LEXICAL_DIM, seed: int = 0
) -> NDArray[np.float32] | None:
    """Unit LSA rows of every prompt: word 1-2-gram TF-IDF (sublinear tf, terms in >= 2 training prompts)
    fitted on ``texts[train]``, projected on its top ``dim`` singular directions (seeded).

    Returns None when the training prompts share no term (nothing lexical to compare). A prompt with no
    known term gets a zero row (lexical similarity 0 to everything).
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    rows = np.asarray(train, dtype=np.int64)
    if len(texts) == 0 or rows.size < 3:
        return None
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, max_features=200_000)
    try:
        T_tr = vec.fit_transform([str(texts[i]) for i in rows])
    except ValueError:  # empty vocabulary: no term in two training prompts
        return None
    k = min(int(dim), T_tr.shape[1] - 1, rows.size - 1)
    if k < 1:
        return None
    svd = TruncatedSVD(n_components=k, random_state=int(seed)).fit(T_tr)
    return _unit(svd.transform(vec.transform([str(t) for t in texts])))


def mix(dense: ArrayLike, lexical: ArrayLike, w: float) -> NDArray[np.float32]:
    """Rows whose dot product is ``w cos_dense + (1 - w) cos_lexical`` (both inputs unit rows; w in [0, 1])."""
    if not 0.0 <= float(w) <= 1.0:
        raise ValueError(f"the dense weight w must be in [0, 1], got {w}")
    A = np.asarray(dense, dtype=np.float32)
    B = np.asarray(lexical, dtype=np.float32)
    if A.shape[0] != B.shape[0]:
        raise ValueError(f"dense has {A.shape[0]} rows, lexical {B.shape[0]}")
    return np.ascontiguousarray(np.concatenate([np.sqrt(w) * A, np.sqrt(1.0 - w) * B], axis=1), dtype=np.float32)
