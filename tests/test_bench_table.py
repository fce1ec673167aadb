"""bench.table: the markdown renderer and the merge that builds bench/summary.json from two runs."""

from __future__ import annotations

import json

import pytest

from bench.table import merge, render


def _run(cases, time):
    return {"bounds": {"read_GBps_1t": 10.0, "read_GBps_2t": 20.0, "sgemm_GFLOPs_1t": 100.0, "sgemm_GFLOPs_2t": 200.0},
            "cases": cases, "meta": {"time": time, "note": "old note"}}


def test_merge_takes_prefixed_cases_and_records_their_run():
    base = _run({"single/N=10": {"ours-int8": {"p50_ms": 0.1}}, "hnsw/N=1M": {"ef=200": {"p50_ms": 0.9}}}, "t0")
    extra = _run({"hnsw/N=1M": {"ef=200": {"p50_ms": 0.6}}, "hnsw-real/x": {"ef=128": {"recall_at_100": 0.99}},
                  "single/N=10": {"ours-int8": {"p50_ms": 9.9}}}, "t1")
    out = merge(base, extra, ("hnsw",))
    assert out["cases"]["hnsw/N=1M"]["ef=200"]["p50_ms"] == 0.6  # replaced
    assert out["cases"]["hnsw-real/x"]["ef=128"]["recall_at_100"] == 0.99  # added
    assert out["cases"]["single/N=10"]["ours-int8"]["p50_ms"] == 0.1  # not a prefix: base kept
    assert out["meta"]["merged_runs"] == [{"cases": ["hnsw-real/x", "hnsw/N=1M"], "meta": extra["meta"]}]
    assert "note" not in out["meta"] and out["meta"]["time"] == "t0"
    assert base["cases"]["hnsw/N=1M"]["ef=200"]["p50_ms"] == 0.9  # inputs untouched
    json.dumps(out)
    assert "### Approximate index" in render(out)


def test_merge_without_a_matching_case_refuses():
    with pytest.raises(SystemExit, match="no case of the second file starts with hnsw"):
        merge(_run({}, "t0"), _run({"single/a": {}}, "t1"), ("hnsw",))
