"""experiments.quality_ideas and experiments.headroom (issue 21): the pieces each experiment rests on, against NumPy."""

from __future__ import annotations

import numpy as np

from experiments.headroom import analyse
from experiments.quality_ideas import Setup, grid_candidates, lcb, mix, pick, skip_similar, unit
from knnroute.evaluate.cell import EvalData
from knnroute.routers import tuned as _tuned
from knnroute.routers.knn import KNNRouter


def _data(seed: int = 0, n: int = 120, d: int = 8, m: int = 3) -> EvalData:
    rng = np.random.default_rng(seed)
    X = unit(rng.normal(size=(n, d)))
    S = (rng.random((n, m)) < 0.5 + 0.3 * X[:, :m]).astype(np.float64)
    C = np.abs(rng.normal(1e-3, 2e-4, size=(n, m))) * np.arange(1, m + 1)
    return EvalData(name="toy", X=X, scores=S, costs=C, model_names=[f"m{i}" for i in range(m)])


def test_mix_dot_product_is_the_weighted_cosine():
    rng = np.random.default_rng(1)
    A, B = unit(rng.normal(size=(5, 4))), unit(rng.normal(size=(5, 6)))
    Z = mix(A, B, 0.7)
    want = 0.7 * (A @ A.T) + 0.3 * (B @ B.T)
    np.testing.assert_allclose(Z @ Z.T, want, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, atol=1e-6)


def test_skip_similar_moves_near_duplicates_behind_and_keeps_order():
    idx = np.array([[4, 2, 9, 7, 1]], dtype=np.int64)
    sim = np.array([[0.99, 0.96, 0.8, 0.7, 0.6]], dtype=np.float32)
    i, s = skip_similar(idx, sim, 0.95, 3)
    assert i.tolist() == [[9, 7, 1]] and s.tolist() == [[np.float32(0.8), np.float32(0.7), np.float32(0.6)]]
    i, s = skip_similar(idx, sim, 0.97, 3)
    assert i.tolist() == [[2, 9, 7]]


def test_lcb_subtracts_kappa_standard_errors_per_observed_neighbour_count():
    S_tr = np.array([[1, 0], [0, np.nan], [1, 1]], dtype=np.float32)
    idx = np.array([[0, 1, 2]], dtype=np.int64)
    sh = np.array([[2 / 3, 0.5]])
    got = lcb(sh, idx, S_tr, k=3, beta=1.0, kappa=2.0)
    want = [2 / 3 - 2 * np.sqrt((2 / 3) * (1 / 3) / 4), 0.5 - 2 * np.sqrt(0.25 / 3)]
    np.testing.assert_allclose(got[0], want, rtol=1e-12)


def test_base_family_is_knn_tuned_exactly():
    data = _data()
    st = Setup(data, seed=0)
    grid = _tuned.knn_grid(st.n_train - 1)
    chosen = pick(grid_candidates(st, "base", "x", data.X, grid, 0), ("base",))
    sp = st.sp
    ref = _tuned.TunedKNNRouter(random_state=0).fit(
        data.X[sp.train], data.scores[sp.train], data.costs[sp.train],
        X_val=data.X[sp.val], scores_val=data.scores[sp.val], costs_val=data.costs[sp.val],
    )
    assert chosen.label.split("; ")[1] == ref.best_.label()
    s_ref, c_ref = ref.predict(data.X[sp.test])
    s_got, c_got = chosen.test_pred()
    np.testing.assert_allclose(s_got, s_ref, atol=1e-6)
    np.testing.assert_allclose(c_got, c_ref, rtol=1e-6)
    assert isinstance(ref.router_, KNNRouter)


def test_headroom_counts_on_a_hand_made_table():
    S = np.array([[1, 0], [0, 0], [0, 1], [1, 1]], dtype=np.float64)
    C = np.array([[1.0, 2.0]] * 4)
    X = unit(np.array([[1, 0], [1, 0.01], [0, 1], [-1, 0]], dtype=np.float64))
    r = analyse("toy", X, S, C, dup=0.99)
    assert r["beta"] == 0.25 and r["alpha"] == 0.25
    assert r["best_model_acc"] == 0.5 and r["oracle_acc"] == 0.75
    # model 0 is best (ties on the mean go to the cheaper); it fails rows 1 and 2, and model 1 rescues row 2
    assert r["rescue"] == 0.25
    # rows 0 and 1 are each other's near duplicate: their outcomes agree on model 1 only
    assert r["dup_prompts"] == 2 and r["dup_agree"] == 0.5
    # row 0 follows row 1's best (a tie at 0: cheaper model 0, score 1); row 1 follows row 0's (model 0, 0)
    assert r["twin_oracle_acc"] == 0.5


def test_lexical_vectors_are_fitted_on_the_training_prompts_only():
    from knnroute.embed.lexical import lexical_vectors

    texts = [f"alpha beta topic{i % 3} word{i % 5}" for i in range(30)]
    train = np.arange(20)
    T = lexical_vectors(texts, train, dim=8)
    changed = texts[:20] + ["zulu yankee xray"] * 10  # only unseen words in the non-training rows
    T2 = lexical_vectors(changed, train, dim=8)
    np.testing.assert_allclose(T2[:20], T[:20], atol=1e-6)  # training rows do not see the others
    assert np.all(T2[20:] == 0.0)  # no training term: similarity 0 to everything
    np.testing.assert_allclose(np.linalg.norm(T[:20], axis=1), 1.0, atol=1e-5)
    assert lexical_vectors(["a", "b", "c", "d"], np.arange(4)) is None  # no term in two prompts


def _demo_eval_data(with_texts: bool) -> EvalData:
    from knnroute.data import make_demo

    ds = make_demo(n=300, seed=3)
    ed = EvalData.from_dataset(ds)
    assert ("texts" in ed.meta) and len(ed.meta["texts"]) == ed.n
    if not with_texts:
        ed = EvalData(name=ed.name, X=ed.X, scores=ed.scores, costs=ed.costs, model_names=ed.model_names)
    return ed


def test_knn_tuned_lex_searches_a_superset_of_knn_tuned():
    from knnroute.evaluate.cell import run_cell

    ed = _demo_eval_data(with_texts=True)
    for seed in (0, 1):
        plain = run_cell(ed, "knn-tuned", seed).records[0]
        lex = run_cell(ed, "knn-tuned-lex", seed).records[0]
        assert lex["lexical_weight"] in (1.0, 0.75, 0.5)
        assert lex["val_auc"] >= plain["val_auc"]  # the dense candidates are all still there
        if lex["lexical_weight"] == 1.0:
            assert lex["auc"] == plain["auc"]
        else:
            assert lex["val_auc"] > plain["val_auc"]  # chosen only when strictly better on the pool


def test_knn_tuned_lex_without_texts_is_knn_tuned():
    from knnroute.evaluate.cell import run_cell

    ed = _demo_eval_data(with_texts=False)
    plain = run_cell(ed, "knn-tuned", 0).records[0]
    lex = run_cell(ed, "knn-tuned-lex", 0).records[0]
    assert lex["lexical_weight"] == 1.0 and lex["auc"] == plain["auc"] and lex["k"] == plain["k"]
