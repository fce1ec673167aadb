"""One prompt through ``PromptEncoder``'s lean path (``Embedder.encode_one``) routes exactly as through the batch
``encode`` (issue 31's hybrid fast path): the static WordLlama embedder and the lexical hybrid on RouterBench
ARC-C, every test prompt, several λ."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from knnroute.embed.prompt import PromptEncoder


@pytest.mark.realdata
@pytest.mark.skipif(importlib.util.find_spec("wordllama") is None, reason="wordllama not installed")
def test_single_prompt_path_routes_as_the_batch_path(real_data: Path, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.setenv("KNNROUTE_CACHE", str(tmp_path))
    pytest.importorskip("scipy")
    from knnroute.data import load_dataset
    from knnroute.data.hygiene import PrefixStripper
    from knnroute.embed import embed_texts, get_embedder
    from knnroute.embed.lexical import FIT_MAX_FEATURES, HybridLexicalEmbedder, LexicalModel
    from knnroute.production import ProductionRouter
    from knnroute.routers.knn import KNNRouter

    ds = next(d for d in load_dataset("routerbench") if d.name.startswith("arc"))
    assert ds.prompts is not None and ds.split is not None
    texts = PrefixStripper().fit_transform(list(ds.prompts), None if ds.groups is None else list(ds.groups))
    tr, te = np.flatnonzero(ds.split == "train"), np.flatnonzero(ds.split == "test")
    dense = get_embedder("wordllama")
    X = embed_texts(texts, dense, progress=False)
    lex = LexicalModel.fit([texts[i] for i in tr], seed=0, max_features=FIT_MAX_FEATURES)
    assert lex is not None
    hyb = HybridLexicalEmbedder(dense, lex, 0.5)
    names = list(ds.model_names)
    queries = [texts[i] for i in te]
    for emb, support in ((dense, X), (hyb, hyb.combine(X, texts))):
        router = ProductionRouter(KNNRouter(k=100).fit(support[tr], ds.scores[tr], ds.costs[tr], model_names=names),
                                  embedder=emb)
        assert isinstance(router.encoder, PromptEncoder)
        lean = np.stack([router.embed([t])[0] for t in queries])
        monkeypatch.setattr(PromptEncoder, "single_fast", False)
        batch = np.stack([router.embed([t])[0] for t in queries])
        before = {lam: [router.route_prompts([t], lam=lam)[0] for t in queries] for lam in (0.0, 100.0, 1e4)}
        monkeypatch.setattr(PromptEncoder, "single_fast", True)
        np.testing.assert_allclose(lean, batch, atol=1e-6)
        for lam, want in before.items():
            assert [router.route_prompts([t], lam=lam)[0] for t in queries] == want
