"""Savings read off the hulls (issue 21): hull_value / cost_to_reach on hand-made hulls, the best and cheapest
models, the record fields of run_cell (oracle <= 1, best-single = 1), summarise and the SAVINGS block."""

from __future__ import annotations

import math

import numpy as np
import pytest

from knnroute.evaluate import report
from knnroute.evaluate.cell import EvalData, run_cell
from knnroute.evaluate.curves import curve_from_points, fill_missing
from knnroute.evaluate.references import single_model_points
from knnroute.evaluate.savings import (
    SAVINGS_FIELDS,
    cost_to_reach,
    hull_value,
    reference_models,
    savings_fields,
    savings_fields_mean,
)

# (0, 0) -> (1, 50) -> (2, 70), flat after 2
HULL = (np.array([0.0, 1.0, 2.0]), np.array([0.0, 50.0, 70.0]))


def test_hull_value_interpolates_and_is_flat_after_the_last_vertex() -> None:
    assert hull_value(HULL, 0.0) == 0.0
    assert hull_value(HULL, 0.5) == pytest.approx(25.0)
    assert hull_value(HULL, 1.0) == 50.0  # exactly at a vertex
    assert hull_value(HULL, 1.5) == pytest.approx(60.0)
    assert hull_value(HULL, 2.0) == 70.0
    assert hull_value(HULL, 2.5) == 70.0 and hull_value(HULL, 1e9) == 70.0  # flat to the right
    assert math.isnan(hull_value(HULL, -0.1))
    grid = np.linspace(0.0, 4.0, 81)
    np.testing.assert_allclose([hull_value(HULL, c) for c in grid], np.interp(grid, *HULL))


def test_cost_to_reach_inverts_the_hull() -> None:
    assert cost_to_reach(HULL, 0.0) == 0.0  # reached at the first vertex
    assert cost_to_reach(HULL, -5.0) == 0.0
    assert cost_to_reach(HULL, 25.0) == pytest.approx(0.5)
    assert cost_to_reach(HULL, 50.0) == 1.0  # a score exactly at a vertex: that vertex's cost
    assert cost_to_reach(HULL, 60.0) == pytest.approx(1.5)
    assert cost_to_reach(HULL, 70.0) == 2.0  # the top: not somewhere along the flat part
    assert cost_to_reach(HULL, 70.0 + 1e-12) == 2.0  # float rounding of the same mean still reaches it
    assert math.isnan(cost_to_reach(HULL, 70.001))  # never
    assert math.isnan(cost_to_reach(HULL, float("nan")))
    for s in np.linspace(0.0, 70.0, 29):  # round trip
        assert hull_value(HULL, cost_to_reach(HULL, s)) == pytest.approx(s)


def test_cost_to_reach_on_a_hull_that_starts_above_zero_and_a_flat_segment() -> None:
    free = (np.array([0.0, 0.0, 1.0]), np.array([0.0, 30.0, 40.0]))  # a free model above the anchor
    assert hull_value(free, 0.0) == 30.0  # the higher of two vertices at one cost
    assert cost_to_reach(free, 20.0) == 0.0 and cost_to_reach(free, 30.0) == 0.0
    assert cost_to_reach(free, 35.0) == pytest.approx(0.5)
    flat = (np.array([0.0, 1.0, 3.0, 4.0]), np.array([0.0, 50.0, 50.0, 60.0]))
    assert cost_to_reach(flat, 50.0) == 1.0  # the first cost on the flat part
    assert hull_value(flat, 2.0) == 50.0
    assert cost_to_reach(flat, 55.0) == pytest.approx(3.5)


def test_reading_a_curve_from_points_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    cost, score = rng.uniform(0.1, 2.0, 12), rng.uniform(10.0, 90.0, 12)
    cv = curve_from_points(cost, score, 2.0)
    grid = np.linspace(0.0, 3.0, 301)
    dense = np.interp(grid, cv.hull_cost, cv.hull_score)
    np.testing.assert_allclose([hull_value(cv, c) for c in grid], dense, atol=1e-9)
    top = float(score.max())
    assert cost_to_reach(cv, top) == pytest.approx(float(cost[np.argmax(score)]))
    for s in (0.25 * top, 0.5 * top, 0.9 * top):
        reached = grid[dense >= s - 1e-9]
        assert reached[0] - 0.01 <= cost_to_reach(cv, s) <= reached[0] + 1e-9  # first grid cost at or above
    assert math.isnan(cost_to_reach(cv, top + 0.5))


def test_reference_models_break_ties() -> None:
    # mean scores 0.5, 0.8, 0.8, 0.2; mean costs 2, 3, 1, 1: best = m2 (0.8, cheaper), cheapest = m2
    s = np.array([[0.5, 0.8, 0.8, 0.2]] * 2)
    c = np.array([[2.0, 3.0, 1.0, 1.0]] * 2)
    ref = reference_models(s, c, ["a", "b", "c", "d"])
    assert ref["best_model"] == "c" and ref["best_model_cost"] == 1.0 and ref["best_model_score"] == 80.0
    assert ref["cheapest_model"] == "c" and ref["cheapest_model_score"] == 80.0  # cost tie: higher score
    c2 = np.array([[2.0, 3.0, 1.5, 1.0]] * 2)
    ref2 = reference_models(s, c2, ["a", "b", "c", "d"])
    assert (ref2["best_model"], ref2["cheapest_model"]) == ("c", "d")
    assert ref2["cheapest_model_cost"] == 1.0 and ref2["cheapest_model_score"] == pytest.approx(20.0)


def test_savings_fields_by_hand() -> None:
    ref = {"best_model_cost": 2.0, "best_model_score": 60.0, "cheapest_model_cost": 0.5,
           "cheapest_model_score": 20.0}
    f = savings_fields(HULL, ref)
    assert f["match_cost_share"] == pytest.approx(0.75)  # 60 reached at cost 1.5 = 75% of 2.0
    assert f["match_saving_usd_per_1k"] == pytest.approx(500.0)  # (2.0 - 1.5) x 1000
    assert f["score_at_cheapest"] == pytest.approx(25.0)
    assert f["score_at_cheapest_gain"] == pytest.approx(5.0)
    never = savings_fields(HULL, {**ref, "best_model_score": 80.0})
    assert math.isnan(never["match_cost_share"]) and math.isnan(never["match_saving_usd_per_1k"])
    low = (np.array([0.0, 1.0]), np.array([0.0, 40.0]))
    both = savings_fields_mean([HULL, low], {**ref, "best_model_score": 30.0})
    assert both["match_cost_share"] == pytest.approx((0.6 / 2 + 0.75 / 2) / 2)
    assert both["score_at_cheapest"] == pytest.approx((25.0 + 20.0) / 2)
    assert math.isnan(savings_fields_mean([HULL, low], ref)["match_cost_share"])  # one repeat never


def _clustered_data() -> EvalData:
    rng = np.random.default_rng(3)
    n, d, m = 260, 12, 4
    centres = rng.normal(size=(6, d))
    lab = rng.integers(0, 6, n)
    X = (centres[lab] + 0.4 * rng.normal(size=(n, d))).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    S = (rng.random((n, m)) < rng.uniform(0.1, 0.95, (6, m))[lab]).astype(float)
    C = np.geomspace(1e-5, 1e-3, m) * rng.uniform(0.8, 1.2, (n, m))
    S[rng.random((n, m)) < 0.03] = np.nan
    return EvalData("clusters", X, S, C, [f"org/m{j}" for j in range(m)], generated=True)


@pytest.fixture(scope="module")
def cells() -> dict[str, list[dict]]:
    data = _clustered_data()
    return {r: [rec for seed in (0, 1) for rec in run_cell(data, r, seed).records]
            for r in ("oracle", "best-single", "single", "random", "knn-10")}


def test_records_carry_the_reference_models(cells: dict[str, list[dict]]) -> None:
    from knnroute.evaluate.cell import split_indices

    data = _clustered_data()
    for rec in cells["oracle"]:
        ts, tc = fill_missing(*(a[split_indices(data.n, rec["seed"]).test] for a in (data.scores, data.costs)))
        pc, ps = single_model_points(ts, tc)
        assert rec["best_model"] == data.model_names[int(np.argmax(ps))]
        assert rec["best_model_score"] == ps.max() and rec["best_model_cost"] == pc[np.argmax(ps)]
        assert rec["cheapest_model"] == data.model_names[int(np.argmin(pc))]
        assert rec["cheapest_model_cost"] == pc.min() and rec["cheapest_model_score"] == ps[np.argmin(pc)]
    for recs in cells.values():
        for rec in recs:
            assert set(SAVINGS_FIELDS) <= set(rec)


def test_oracle_matches_the_best_model_for_at_most_its_cost(cells: dict[str, list[dict]]) -> None:
    # "always the best model" is one assignment the oracle's exact sweep dominates: its hull is above it
    for rec in cells["oracle"]:
        assert 0.0 <= rec["match_cost_share"] <= 1.0 + 1e-12
        assert rec["match_saving_usd_per_1k"] >= -1e-12
        assert rec["score_at_cheapest_gain"] >= -1e-9


def test_best_single_matches_at_exactly_the_best_models_cost(cells: dict[str, list[dict]]) -> None:
    # the best model's point is the top vertex of the best-single hull, so the match is that point
    for rec in cells["best-single"]:
        assert rec["match_cost_share"] == 1.0 and rec["match_saving_usd_per_1k"] == 0.0
        # the cheapest model is one of the hulled points: the hull is at or above it there
        assert rec["score_at_cheapest_gain"] >= 0.0
    for rec in cells["single"]:
        if rec["model"] == rec["best_model"]:
            assert rec["match_cost_share"] == 1.0
        elif rec["model"] == rec["cheapest_model"]:
            assert rec["score_at_cheapest_gain"] == 0.0
    for rec in cells["random"]:  # a uniform mix of the models never reaches the best one's mean score
        assert math.isnan(rec["match_cost_share"]) and rec["score_at_cheapest_gain"] < 0


def test_summary_and_block(cells: dict[str, list[dict]]) -> None:
    recs = [r for rs in cells.values() for r in rs]
    summ = {r["router"]: r for r in report.summarise(recs)}
    o = summ["oracle"]
    shares = [r["match_cost_share"] for r in cells["oracle"]]
    assert o["match_cost_share_mean"] == pytest.approx(np.mean(shares))
    assert o["match_cost_share_std"] == pytest.approx(np.std(shares))
    assert o["match_never"] == 0 and summ["random"]["match_never"] == 2
    assert math.isnan(summ["random"]["match_cost_share_mean"])
    assert summ["best-single"]["best_model"] == cells["oracle"][0]["best_model"]
    # one seed of two never matches: the mean is over the other seed, and the block says so
    part = [dict(r) for r in cells["oracle"]]
    part[1].update(match_cost_share=float("nan"), match_saving_usd_per_1k=float("nan"))
    p = report.summarise(part)[0]
    assert p["match_never"] == 1 and p["match_cost_share_mean"] == pytest.approx(part[0]["match_cost_share"])
    assert p["match_cost_share_std"] == 0.0
    text = report.format_savings([*report.summarise(recs), {**p, "router": "half"}])
    lines = text.splitlines()
    assert lines[0].startswith("clusters")
    best = cells["oracle"][0]["best_model"].split("/")[-1]
    assert f"best model:     {best}" in text and "cost to match best" in text and "saves / 1k queries" in text
    row = {ln.split()[0]: ln for ln in lines[4:] if ln.strip()}
    assert "never" in row["random"] and "$" not in row["random"]
    assert "100.0% ± 0.0%" in row["best-single"] and "$0.0" in row["best-single"]
    assert f"{100 * o['match_cost_share_mean']:.1f}%" in row["oracle"]
    assert "(1/2 never)" in row["half"]
    assert not any(k.startswith("single:") for k in row)
    assert "cost to match" in report.format_savings_notes()
    assert "savings" in report.CONVENTIONS


def test_markdown_tables_carry_the_summary_means_and_the_pooled_gain():
    from knnroute.evaluate.report import format_markdown

    def row(ds, router, auc, std, best, orc, **kw):
        return {"dataset": ds, "router": router, "n_seeds": 2, "auc_mean": auc, "auc_std": std,
                "auc_best_single_mean": best, "auc_oracle_mean": orc, **kw}

    sav = {"match_cost_share_mean": 0.5, "match_cost_share_std": 0.1, "match_never": 0,
           "match_saving_usd_per_1k_mean": 1.25, "best_model": "org/big", "best_model_cost_mean": 0.0025,
           "score_at_cheapest_mean": 40.0, "score_at_cheapest_gain_mean": -0.001}
    summary = [
        row("a", "knn-tuned", 80.0, 0.5, 70.0, 90.0, **sav),
        row("b", "knn-tuned", 60.0, 1.0, 50.0, 100.0, **{**sav, "match_never": 2}),
        row("a", "single:org/big", 75.0, 0.0, 70.0, 90.0),
        row("a", "other", 71.0, 0.0, 70.0, 90.0),
    ]
    md = format_markdown(summary)
    lines = md.splitlines()
    assert lines[0] == "| router | a | b | avg | pooled gain % |"
    # avg AUC 70, avg best-single 60, avg oracle 95: pooled gain 10 / 35
    assert lines[2] == f"| knn-tuned | 80.00 ± 0.50 | 60.00 ± 1.00 | 70.00 | {100 * 10 / 35:.1f} |"
    assert lines[3] == "| other | 71.00 ± 0.00 |  |  |  |"  # no average without every dataset
    assert not any("single:" in x for x in lines)
    assert "| a | big, $2.500 | knn-tuned | 50% ± 10% | $1.250 | 40.00 (+0.00) |" in lines
    assert "| b | big, $2.500 | knn-tuned | never | – | 40.00 (+0.00) |" in lines
    assert not md.startswith("*GENERATED")
    assert format_markdown([{**summary[0], "generated": True}]).startswith("*GENERATED demo data")
