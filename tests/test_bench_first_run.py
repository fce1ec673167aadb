"""bench.first_run (issue 31's one-command report) in quick mode: it runs, reports every target with its
reference from the same run, and the tuner's one-call grid gives the per-configuration loop's AUCs. No timing
is asserted."""

from __future__ import annotations

import json
from pathlib import Path

from bench import first_run


def test_quick_report(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert first_run.main(["--quick", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res["targets"]) == set(first_run.TARGETS)
    assert res["host"]["isa"] and len(res["load_at_start"]) == 3
    grid = res["1_first_run"]["tuner_grid"]
    assert grid["aucs_identical"] is True
    assert grid["configs"] > 100 and grid["loop_s"] > 0 and grid["one_call_s"] > 0
    assert "skipped" in res["2_hybrid"]  # quick mode: no real data
    assert "skipped" in res["3_transformer_onnx"]  # quick mode: bench.embed_onnx measures it alone
    core = res["4_core_avx2"]
    if "skipped" not in core:
        assert core["isa"] == "avx2" and core["ours_int8_p50_us"] > 0 and core["numpy_p50_us"] > 0


def test_embed_onnx_auc_compare() -> None:
    """bench.embed_onnx --auc: per dataset and kNN router, both AUCs and their difference (other rows ignored)."""
    from bench.embed_onnx import auc_compare

    def summary(aucs: dict[tuple[str, str], float]) -> dict:
        return {"summary": [{"dataset": d, "router": r, "auc_mean": a} for (d, r), a in aucs.items()]}

    ref = summary({("a", "knn-10"): 80.0, ("a", "oracle"): 99.0, ("b", "knn-tuned"): 70.0})
    got = summary({("a", "knn-10"): 80.05, ("a", "oracle"): 99.0, ("b", "knn-tuned"): 69.5})
    res = auc_compare(ref, got)
    assert [(r["dataset"], r["router"], r["diff"]) for r in res["rows"]] == [("a", "knn-10", 0.05),
                                                                            ("b", "knn-tuned", -0.5)]
    assert res["max_abs_diff"] == 0.5 and res["datasets"] == ["a", "b"]
