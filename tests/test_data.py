"""knnroute.data: dataset type, loaders on the real files, long format, hygiene, splits, demo, bad data.

Real-file counts are recomputed here from the files with the standard library (csv / json), not with the
loaders' pandas code, and also pinned to the numbers read when the tests were written.
"""

from __future__ import annotations

import ast
import csv
import glob
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from knnroute.data import (
    PrefixStripper,
    RoutingDataset,
    carve_validation,
    common_prefix,
    cross_task_split,
    data_dir,
    decode_turns,
    ensure_split,
    list_real_datasets,
    load_dataset,
    load_llmrouter,
    load_long,
    load_routellm_gsm8k,
    load_routellm_mmlu,
    load_routellm_mtbench,
    load_routerarena,
    load_routerbench,
    make_demo,
    prompt_text,
    random_split,
    register_dataset,
    registry,
    resolve_spec,
    save_long,
    split_dataset,
    strip_common_prefix,
    to_long,
)
from knnroute.data.llmrouter import LLMROUTER_OUTPUT_TOKENS
from knnroute.data.routellm import ROUTELLM_PRICES
from knnroute.data.tables import check_scores, numeric_column

pd = pytest.importorskip("pandas")
csv.field_size_limit(sys.maxsize)

RB = "routerbench-0shot-subset/datasets/routerbench_zs"


# ----------------------------------------------------------------------------------- helpers
def _csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        r = csv.DictReader(fh)
        rows = list(r)
        return list(r.fieldnames or []), rows


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _tiny(n: int = 6, m: int = 3, seed: int = 0) -> RoutingDataset:
    rng = np.random.default_rng(seed)
    return RoutingDataset(
        name="tiny",
        model_names=[f"m{j}" for j in range(m)],
        scores=rng.integers(0, 2, size=(n, m)).astype(float),
        costs=rng.uniform(0, 1e-3, size=(n, m)),
        prompts=[f"prompt {i}" for i in range(n)],
    )


# ------------------------------------------------------------------------------ RoutingDataset
def test_dataset_fields_and_dtypes() -> None:
    ds = _tiny()
    assert ds.n == 6
    assert ds.n_models == 3
    assert len(ds) == 6
    assert ds.scores.dtype == np.float64
    assert ds.costs.dtype == np.float64
    assert ds.ids.dtype == object
    assert list(ds.ids) == [str(i) for i in range(6)]
    assert ds.generated is False
    assert ds.meta == {}


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"scores": np.zeros((3, 2))}, "scores must have shape"),
        ({"costs": np.zeros((4, 3))}, "costs shape"),
        ({"ids": ["a", "b", "a"]}, "prompt id 'a'.*not unique"),
        ({"scores": np.full((3, 3), 1.5)}, "outside \\[0, 1\\]"),
        ({"costs": np.full((3, 3), -1.0)}, "negative"),
        ({"model_names": ["a", "a", "b"]}, "duplicate model names"),
        ({"split": ["train", "test", "holdout"]}, "split labels"),
        ({"embeddings": np.zeros((3, 4))}, "all zeros"),
        ({"prompts": ["x"]}, "1 prompts for 3 rows"),
    ],
)
def test_dataset_validation(kw: dict, match: str) -> None:
    base = {
        "name": "t",
        "model_names": ["a", "b", "c"],
        "scores": np.zeros((3, 3)),
        "costs": np.zeros((3, 3)),
    }
    base.update(kw)
    with pytest.raises(ValueError, match=match):
        RoutingDataset(**base)


def test_dataset_subset_embeddings_summary() -> None:
    ds = _tiny(8)
    ds.scores[0, 1] = np.nan
    X = np.arange(8 * 4, dtype=np.float64).reshape(8, 4) + 1.0
    ds2 = ds.with_embeddings(X, embedder="test")
    assert ds2.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ds2.embeddings, axis=1), 1.0, rtol=1e-6)
    assert ds.embeddings is None  # the original is untouched
    sub = ds2.subset(np.array([5, 0, 2]))
    assert list(sub.ids) == ["5", "0", "2"]
    assert sub.prompts == ["prompt 5", "prompt 0", "prompt 2"]
    np.testing.assert_array_equal(sub.embeddings[1], ds2.embeddings[0])
    mask = np.zeros(8, dtype=bool)
    mask[[1, 3]] = True
    assert list(ds2.subset(mask).ids) == ["1", "3"]
    s = ds2.summary()
    assert "8 prompts x 3 models" in s
    assert "1 score cells" in s
    assert "(test)" in s


# ---------------------------------------------------------------------------------- data_dir
def test_data_dir_env_and_walk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KNNROUTE_DATA", str(tmp_path))
    assert data_dir() == tmp_path.resolve()
    monkeypatch.setenv("KNNROUTE_DATA", str(tmp_path / "nope"))
    assert data_dir(required=False) is None
    with pytest.raises(FileNotFoundError, match="KNNROUTE_DATA"):
        data_dir()
    monkeypatch.delenv("KNNROUTE_DATA")
    deep = tmp_path / "proj" / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert data_dir(required=False) is None
    with pytest.raises(FileNotFoundError, match="set KNNROUTE_DATA"):
        data_dir(required=True)
    (tmp_path / "shared" / "data").mkdir(parents=True)  # found as <tmp>/proj/../shared/data
    assert data_dir() == (tmp_path / "shared" / "data").resolve()


# ------------------------------------------------------------------------------- RouterBench
@pytest.mark.realdata
def test_routerbench_folder_counts(real_data: Path) -> None:
    files = sorted(glob.glob(str(real_data / RB / "*.csv")))
    expect: dict[str, dict[str, int]] = {}
    models_all = None
    for f in files:
        header, rows = _csv_rows(Path(f))
        models = [c[: -len("|total_cost")] for c in header if c.endswith("|total_cost")]
        models_all = models_all or sorted(models)
        task, part = Path(f).stem.rsplit("_", 1)
        e = expect.setdefault(task, {"train": 0, "test": 0, "nan": 0})
        e[part] += len(rows)
        e["nan"] += sum(1 for r in rows for m in models if r[m].strip() == "")
    dss = load_dataset(real_data / "routerbench-0shot-subset")
    assert [d.name for d in dss] == ["arc_challenge", "mbpp", "winograde"]
    assert sorted(expect) == ["arc_challenge", "mbpp", "winograde"]
    for ds in dss:
        e = expect[ds.name]
        assert ds.n == e["train"] + e["test"]
        assert int(np.isnan(ds.scores).sum()) == e["nan"]
        assert sorted(ds.model_names) == models_all
        assert int((ds.split == "test").sum()) == e["test"]
        assert int((ds.split == "val").sum()) == round(e["train"] / 8)
        assert not np.isnan(ds.costs).any()
        assert (ds.costs > 0).all()
        assert set(np.unique(ds.scores[~np.isnan(ds.scores)])) <= {0.0, 1.0}
        assert ds.prices is None
        assert ds.generated is False
    # pinned: what the files held when these tests were written (SOURCE.md agrees)
    assert sum(d.n for d in dss) == 3178
    assert sum(int(np.isnan(d.scores).sum()) for d in dss) == 154
    assert {d.n_models for d in dss} == {11}
    assert {d.name: d.n for d in dss} == {"arc_challenge": 1484, "mbpp": 427, "winograde": 1267}
    assert sum(int((d.split == "test").sum()) for d in dss) == 953
    arc = dss[0]
    assert arc.meta["n_duplicate_sample_ids"] == 14
    assert "154 score cells" in arc.summary()


@pytest.mark.realdata
def test_routerbench_split_shipped_test_untouched(real_data: Path) -> None:
    _, test_rows = _csv_rows(real_data / RB / "winograde_test.csv")
    ds = load_routerbench(real_data / "routerbench-0shot-subset")[2]
    test_ids = set(ds.ids[ds.split == "test"])
    assert test_ids == {r["sample_id"] for r in test_rows}
    other = load_routerbench(real_data / "routerbench-0shot-subset", seed=1)[2]
    assert set(other.ids[other.split == "test"]) == test_ids  # seed moves val, never test
    assert set(other.ids[other.split == "val"]) != set(ds.ids[ds.split == "val"])


@pytest.mark.realdata
def test_routerbench_prompts_decoded(real_data: Path) -> None:
    ds = load_routerbench(real_data / "routerbench-0shot-subset")[1]  # mbpp
    _, rows = _csv_rows(real_data / RB / "mbpp_test.csv")
    assert rows[0]["prompt"].startswith("['")
    assert not any(p.startswith("['") for p in ds.prompts)
    i = list(ds.ids).index(rows[0]["sample_id"])
    assert ds.prompts[i] == ast.literal_eval(rows[0]["prompt"])[0]


@pytest.mark.realdata
def test_routerbench_pickle_path(real_data: Path, tmp_path: Path) -> None:
    frames = [pd.read_csv(f) for f in sorted(glob.glob(str(real_data / RB / "*.csv")))]
    df = pd.concat(frames, ignore_index=True).set_index("Unnamed: 0")
    pkl = tmp_path / "routerbench_0shot.pkl"
    df.to_pickle(pkl)
    from knnroute.data.tables import PickleRefused, allow_pickle

    with pytest.raises(PickleRefused, match="--allow-pickle"):
        load_dataset(pkl)  # a pickle runs code: never unpickled without the opt-in
    with allow_pickle():
        dss = load_dataset(pkl)
    assert {d.name: d.n for d in dss} == {"arc_challenge": 1484, "mbpp": 427, "winogrande": 1267}
    assert sum(int(np.isnan(d.scores).sum()) for d in dss) == 154
    assert all(d.split is None and d.n_models == 11 for d in dss)
    # same outcomes as the CSV folder, matched by id
    csv_arc = load_routerbench(real_data / "routerbench-0shot-subset")[0]
    pkl_arc = dss[0]
    order = {k: i for i, k in enumerate(pkl_arc.ids)}
    idx = np.array([order[k] for k in csv_arc.ids])
    np.testing.assert_array_equal(pkl_arc.scores[idx], csv_arc.scores)
    np.testing.assert_array_equal(pkl_arc.costs[idx], csv_arc.costs)
    with allow_pickle():
        one = load_routerbench(pkl, by_task=False)
    # converted once to Parquet (the documented command), the same data without unpickling
    from knnroute.cli import main

    pq = tmp_path / "routerbench_0shot.parquet"
    assert main(["convert", "--allow-pickle", str(pkl), str(pq)]) == 0
    pq_arc = load_dataset(pq)[0]
    np.testing.assert_array_equal(pq_arc.scores, pkl_arc.scores)
    np.testing.assert_array_equal(pq_arc.costs, pkl_arc.costs)
    assert (
        len(one) == 1
    )
    assert (
        one[0].n == 3178
    )
    assert (
        set(one[0].groups) == {"arc-challenge", "mbpp", "winogrande"}
    )


@pytest.mark.realdata
def test_routerbench_single_csv_autodetect(real_data: Path) -> None:
    dss = load_dataset(real_data / RB / "mbpp_test.csv")
    assert len(dss) == 1
    assert dss[0].name == "mbpp"
    assert dss[0].n == 128
    assert dss[0].split is None


# --------------------------------------------------------------------------------- LLMRouter
@pytest.mark.realdata
def test_llmrouter_counts_prices_costs(real_data: Path) -> None:
    root = real_data / "llmrouter-dcrouter"
    tr = json.loads((root / "data/dcrouter_preprocessed/train.json").read_text())
    te = json.loads((root / "data/dcrouter_preprocessed/test.json").read_text())
    llm = json.loads((root / "data/example_data/llm_candidates/default_llm.json").read_text())
    (ds,) = load_dataset("llmrouter") if data_dir(required=False) == real_data else load_llmrouter(root)
    assert ds.n == len(tr) + len(te) == 5608 + 500
    assert ds.n_models == len(tr[0]["scores"]) == 9
    assert int((ds.split == "test").sum()) == len(te)
    assert int((ds.split == "val").sum()) == round(len(tr) / 8)
    assert int(np.isnan(ds.scores).sum()) == 0
    assert ds.prices == {m: (llm[m]["input_price"], llm[m]["output_price"]) for m in ds.model_names}
    j = ds.model_names.index("llama3-chatqa-1.5-70b")
    q = tr[0]["question"]
    assert ds.scores[0, j] == tr[0]["scores"]["llama3-chatqa-1.5-70b"]
    pin, pout = llm["llama3-chatqa-1.5-70b"]["input_price"], llm["llama3-chatqa-1.5-70b"]["output_price"]
    assert ds.costs[0, j] == pytest.approx((len(q) / 4 * pin + LLMROUTER_OUTPUT_TOKENS * pout) / 1e6)
    assert len(set(ds.groups)) == 14
    assert (ds.groups == "unknown").sum() == 0
    train_q = {r["question"] for r in tr}
    assert ds.meta["n_test_questions_in_train"] == sum(r["question"] in train_q for r in te) == 119


@pytest.mark.realdata
def test_input_costs_are_the_known_part_of_the_real_costs(real_data: Path) -> None:
    """``input_costs()`` (prompt chars/4 x input price) is the input term of every estimated cost: on
    LLMRouter and RouteLLM-MMLU the rest is one output constant per model, on GSM8K it is >= 0; RouterBench
    (no price table) has none."""
    (llm,) = load_llmrouter(real_data / "llmrouter-dcrouter")
    rest = llm.costs - llm.input_costs()
    np.testing.assert_allclose(rest, np.broadcast_to(rest[:1], rest.shape), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(
        rest[0], [LLMROUTER_OUTPUT_TOKENS * llm.prices[m][1] / 1e6 for m in llm.model_names], rtol=1e-9
    )
    (mmlu,) = load_routellm_mmlu(real_data / "routellm-evals")
    rest = mmlu.costs - mmlu.input_costs()
    np.testing.assert_allclose(rest, np.broadcast_to(rest[:1], rest.shape), rtol=1e-9, atol=1e-15)
    (gsm,) = load_routellm_gsm8k(real_data / "routellm-evals")
    assert np.all(gsm.costs - gsm.input_costs() >= -1e-15)
    assert {d.input_costs() is None for d in load_dataset(real_data / RB)} == {True}


@pytest.mark.realdata
def test_llmrouter_output_token_constant_is_measured(real_data: Path) -> None:
    means = []
    for f in sorted((real_data / "routerarena-cached/cached_results").glob("*.jsonl")):
        toks = [r["token_usage"]["output_tokens"] for r in _jsonl(f)]
        means.append(sum(toks) / len(toks))
    assert LLMROUTER_OUTPUT_TOKENS == round(sum(means) / len(means))


# ---------------------------------------------------------------------------------- RouteLLM
@pytest.mark.realdata
def test_routellm_prices_match_routerarena_table(real_data: Path) -> None:
    table = json.loads((real_data / "routerarena-cached/model_cost/cost.json").read_text())

    def pair(k: str) -> tuple[float, float]:
        return (table[k]["input_token_price_per_million"], table[k]["output_token_price_per_million"])

    assert ROUTELLM_PRICES["gpt-4-1106-preview"] == pair("gpt-4-1106-preview")
    assert ROUTELLM_PRICES["mistralai/Mixtral-8x7B-Instruct-v0.1"] == pair(
        "mistralai/mixtral-8x7b-instruct"
    )


@pytest.mark.realdata
def test_routellm_mmlu_counts(real_data: Path) -> None:
    files = sorted((real_data / "routellm-evals/routellm/evals/mmlu/responses").glob("mmlu_*.csv"))
    n = 0
    correct = np.zeros(2)
    for f in files:
        _, rows = _csv_rows(f)
        n += len(rows)
        correct += [sum(r[m] == "True" for r in rows) for m in ROUTELLM_PRICES]
    (ds,) = load_routellm_mmlu(real_data / "routellm-evals")
    assert ds.n == n == 14042
    assert ds.n_models == 2
    assert len(files) == 57
    assert len(set(ds.groups)) == 57
    np.testing.assert_allclose(ds.scores.sum(axis=0), correct)
    assert int(np.isnan(ds.scores).sum()) == 0
    assert ds.split is None
    assert ds.meta["n_contaminated"] > 0
    (clean,) = load_routellm_mmlu(real_data / "routellm-evals", drop_contaminated=True)
    assert clean.n == ds.n - ds.meta["n_contaminated"]
    assert not clean.meta["contaminated"].any()
    assert ds.subset(np.arange(10)).meta["contaminated"].shape == (10,)


@pytest.mark.realdata
def test_routellm_gsm8k_counts_and_costs(real_data: Path) -> None:
    _, rows = _csv_rows(real_data / "routellm-evals/routellm/evals/gsm8k/gsm8k_responses.csv")
    (ds,) = load_routellm_gsm8k(real_data / "routellm-evals")
    assert ds.n == len(rows) == 1319
    assert ds.n_models == 2
    r = rows[5]
    m = "gpt-4-1106-preview"
    expect = (len(r["prompt"]) / 4 * 10.0 + len(r[m + "_response"]) / 4 * 30.0) / 1e6
    assert ds.costs[5, ds.model_names.index(m)] == pytest.approx(expect)
    assert ds.scores[5, ds.model_names.index(m)] == (1.0 if r[m] == "True" else 0.0)


@pytest.mark.realdata
def test_routellm_mtbench_counts_and_scale(real_data: Path) -> None:
    base = real_data / "routellm-evals/routellm/evals/mt_bench"
    judg = _jsonl(base / "judgements.jsonl")
    n_q = len(_jsonl(base / "question.jsonl"))
    (ds,) = load_routellm_mtbench(real_data / "routellm-evals")
    assert n_q == 80
    assert ds.n == n_q * 2 == 160
    assert ds.n_models == 2
    assert int(np.isnan(ds.scores).sum()) == 0
    assert len(judg) == ds.n * ds.n_models == 320
    j = judg[0]
    i = list(ds.ids).index(f"mtbench-{j['question_id']}-turn{j['turn']}")
    assert ds.scores[i, ds.model_names.index(j["model"])] == pytest.approx(j["score"] / 10)
    assert ds.scores.min() >= 0.1
    assert ds.scores.max() <= 1.0
    assert (ds.costs > 0).all()
    t2 = list(ds.ids).index("mtbench-81-turn2")
    assert ds.prompts[t2].startswith(ds.prompts[list(ds.ids).index("mtbench-81-turn1")] + "\n\n")


# ------------------------------------------------------------------------------- RouterArena
@pytest.mark.realdata
def test_routerarena_counts_costs_clipping(real_data: Path) -> None:
    files = sorted((real_data / "routerarena-cached/cached_results").glob("*.jsonl"))
    recs = {f.stem: _jsonl(f) for f in files}
    (ds,) = load_routerarena(real_data / "routerarena-cached")
    assert ds.n == 809 == len(next(iter(recs.values())))
    assert ds.n_models == len(files) == 2
    out_of_range = sum(not 0 <= r["evaluation_result"]["score"] <= 1 for rs in recs.values() for r in rs)
    assert ds.meta["n_scores_clipped"] == out_of_range == 1
    for j, m in enumerate(ds.model_names):
        by = {r["global_index"]: r for r in recs[m]}
        cost = np.array([by[g]["evaluation_result"]["inference_cost"] for g in ds.ids])
        np.testing.assert_array_equal(ds.costs[:, j], cost)
        score = np.clip([by[g]["evaluation_result"]["score"] for g in ds.ids], 0, 1)
        np.testing.assert_array_equal(ds.scores[:, j], score)
    table = json.loads((real_data / "routerarena-cached/model_cost/cost.json").read_text())
    for m in ds.model_names:
        assert ds.prices[m] == (
            table[m]["input_token_price_per_million"],
            table[m]["output_token_price_per_million"],
        )


# ---------------------------------------------------------------------------------- registry
@pytest.mark.realdata
def test_registry_names_and_folder_autodetect(real_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KNNROUTE_DATA", str(real_data))
    names = list_real_datasets()
    assert names == [
        "routerbench",
        "llmrouter",
        "routellm-mmlu",
        "routellm-gsm8k",
        "routellm-mtbench",
        "routerarena",
        "math-v",
    ]
    assert [d.name for d in load_dataset(real_data / "routellm-evals")] == [
        "routellm-mmlu",
        "routellm-gsm8k",
        "routellm-mtbench",
    ]
    assert [d.name for d in load_dataset(real_data / "routerarena-cached")] == ["routerarena"]
    assert [d.name for d in load_dataset(real_data / "llmrouter-dcrouter")] == ["llmrouter"]
    assert [d.n for d in load_dataset("routellm-gsm8k")] == [1319]


def test_registry_extension_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "REAL_DATASETS", dict(registry.REAL_DATASETS))
    (tmp_path / "my-bench").mkdir()
    calls = []

    def loader(folder: Path, **kw: object) -> list[RoutingDataset]:
        calls.append((folder, kw))
        return [_tiny()]

    register_dataset("my-bench", "my-bench", loader, "test")
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("my-bench", "my-bench", loader)
    monkeypatch.setenv("KNNROUTE_DATA", str(tmp_path))
    assert "my-bench" in list_real_datasets()
    assert load_dataset("my-bench", seed=3)[0].name == "tiny"
    assert calls[0] == (tmp_path.resolve() / "my-bench", {"seed": 3})


def test_load_dataset_unknown(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="known dataset name"):
        load_dataset("no-such-benchmark")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_dataset(tmp_path / "x.txt")
    with pytest.raises(ValueError, match="layout not recognised"):
        load_dataset(tmp_path)


# --------------------------------------------------------------------------------- hygiene
def test_decode_turns_and_prompt_text() -> None:
    assert decode_turns("['a b', 'c']") == ["a b", "c"]
    assert decode_turns('["x"]') == ["x"]
    assert decode_turns('[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]') == ["u"]
    assert decode_turns("[not a list") is None
    assert decode_turns("[1, 2]") is None
    assert decode_turns("plain text") is None
    assert decode_turns("[__import__('os')]") is None  # never evaluates code
    assert prompt_text("['q', 'q']") == "q"  # consecutive duplicate turn collapsed
    assert prompt_text("['q1', 'q2']") == "q1\n\nq2"
    assert prompt_text("[link](x)") == "[link](x)"


def test_common_prefix_boundaries() -> None:
    shots = "Example one.\nAnswer: A\n\nExample two.\nAnswer: B\n\n"
    texts = [shots + "Question alpha?", shots + "Question beta?", shots + "Qu"]
    assert common_prefix(texts) == shots
    assert common_prefix(["abc def", "abc xyz"]) == ""  # shared, but no blank line to cut at
    assert common_prefix(["only one"]) == ""
    # never leaves a text empty: the cut backs off to the previous blank line
    assert common_prefix(["A\n\nB\n\n", "A\n\nB\n\nC"]) == "A\n\n"
    out, st = strip_common_prefix(texts, min_chars=10, min_group_size=2)
    assert out == ["Question alpha?", "Question beta?", "Qu"]
    assert "2" not in st.describe() or "chars" in st.describe()


def test_prefix_stripper_groups_and_persistence() -> None:
    pa, pb = "A-shots " * 20 + "\n\n", "B-shots " * 20 + "\n\n"
    texts = [pa + "q1", pa + "q2", pb + "q3", pb + "q4", "lonely"]
    groups = ["a", "a", "b", "b", "c"]
    st = PrefixStripper(min_chars=64, min_group_size=2).fit(texts, groups)
    assert st.prefixes_ == {"a": pa, "b": pb}
    assert st.transform(texts, groups) == ["q1", "q2", "q3", "q4", "lonely"]
    # a new prompt (serving) is stripped by whichever learned prefix it starts with
    st2 = PrefixStripper.from_dict(json.loads(json.dumps(st.to_dict())))
    assert st2.transform([pb + "new question", "no prefix"]) == ["new question", "no prefix"]
    assert PrefixStripper(min_chars=1000, min_group_size=2).fit(texts, groups).prefixes_ == {}
    assert PrefixStripper(min_chars=64).fit(texts, groups).prefixes_ == {}  # groups of 2 < 20
    with pytest.raises(ValueError, match="not fitted"):
        PrefixStripper().transform(["x"])


@pytest.mark.realdata
def test_prefix_stripping_real_fewshot_prompts(real_data: Path) -> None:
    arc, mbpp, wino = load_routerbench(real_data / "routerbench-0shot-subset")
    for ds, n_shots in ((arc, 5), (wino, 5)):
        raw_answers = [p.count("Answer:") for p in ds.prompts]
        assert min(raw_answers) >= n_shots + 1  # few-shot examples + the real question
        out, st = strip_common_prefix(ds.prompts)
        assert len(st.prefixes_["*"]) >= 1200  # 1.2-1.7k identical characters, as the issue says
        assert all(t.count("Answer:") == 1 for t in out)  # only the question itself is left
        assert all(ds.prompts[i].endswith(t) for i, t in enumerate(out))
    out, st = strip_common_prefix(mbpp.prompts)
    assert st.prefixes_ == {}
    assert out == mbpp.prompts


# ---------------------------------------------------------------------------------- splits
def test_random_split_sizes_and_seed() -> None:
    a = random_split(1000, seed=0)
    assert [(a == k).sum() for k in ("train", "val", "test")] == [700, 100, 200]
    assert (random_split(1000, seed=0) == a).all()
    assert not (random_split(1000, seed=1) == a).all()
    assert [(random_split(7, 0) == k).sum() for k in ("train", "val", "test")] == [5, 1, 1]
    with pytest.raises(ValueError, match="summing to 1"):
        random_split(10, fractions=(0.5, 0.5, 0.5))


def test_carve_validation_never_touches_test() -> None:
    lab = np.array(["train"] * 80 + ["test"] * 20, dtype=object)
    out = carve_validation(lab, 1 / 8, seed=0)
    assert (out[80:] == "test").all()
    assert (out == "val").sum() == 10
    assert (out == "train").sum() == 70


def test_ensure_and_split_dataset() -> None:
    ds = _tiny(20)
    parts = split_dataset(ds, seed=0)
    assert [p.n for p in parts.values()] == [14, 2, 4]
    assert ensure_split(ds).meta["split_source"].startswith("seeded random 70/10/20")
    shipped = ds.with_split(["test"] * 20)
    assert ensure_split(shipped) is shipped


def test_cross_task_split() -> None:
    ds = make_demo(n=600, seed=1)
    xs = cross_task_split(ds, ["python", "arithmetic"], ["law"], seed=0)
    assert set(xs.groups[xs.split == "test"]) == {"law"}
    assert set(xs.groups[xs.split != "test"]) == {"python", "arithmetic"}
    assert (xs.split == "val").sum() == round((xs.split != "test").sum() / 8)
    with pytest.raises(ValueError, match="not in dataset"):
        cross_task_split(ds, ["python"], ["chemistry"])
    with pytest.raises(ValueError, match="both"):
        cross_task_split(ds, ["python"], ["python"])


@pytest.mark.realdata
def test_cross_task_split_routerbench(real_data: Path) -> None:
    (rb,) = load_routerbench(real_data / "routerbench-0shot-subset", by_task=False)
    assert rb.n == 3178
    assert rb.groups is not None
    xs = cross_task_split(rb, ["arc-challenge", "winogrande"], ["mbpp"])
    assert (xs.split == "test").sum() == 427
    assert xs.n == 3178


# ------------------------------------------------------------------------------------ demo
def test_demo_is_labelled_generated_and_routable() -> None:
    ds = make_demo()
    assert ds.generated
    assert "generated" in ds.name
    assert "GENERATED" in ds.source
    s = ds.summary()
    assert s.splitlines()[0].startswith("GENERATED DATA")
    assert "not real" in s
    assert ds.embeddings is not None
    assert ds.split is not None
    assert ds.prompts is not None
    assert all("generated demo prompt" in p for p in ds.prompts)
    again = make_demo()
    np.testing.assert_array_equal(ds.scores, again.scores)
    np.testing.assert_array_equal(ds.embeddings, again.embeddings)
    # different models are best on different topics, so routing beats every single model
    best = {g: int(np.argmax(ds.scores[ds.groups == g].mean(0))) for g in set(ds.groups)}
    assert len(set(best.values())) >= 2
    assert ds.scores.max(axis=1).mean() > ds.scores.mean(axis=0).max() + 0.05
    assert load_dataset("demo")[0].generated


# --------------------------------------------------------------------------------- long format
def _assert_same(a: RoutingDataset, b: RoutingDataset) -> None:
    assert list(a.ids) == list(b.ids)
    assert a.model_names == b.model_names
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_allclose(a.costs, b.costs, rtol=1e-15, atol=0)
    assert a.prompts == b.prompts
    assert (a.groups is None) == (b.groups is None)
    if a.groups is not None:
        assert list(a.groups) == list(b.groups)
    if a.split is not None:
        assert list(a.split) == list(b.split)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_long_format_round_trip(tmp_path: Path, suffix: str) -> None:
    ds = make_demo(n=60, seed=2)
    ds.scores[3, 1] = np.nan
    ds.costs[4, 2] = np.nan
    path = save_long(ds, tmp_path / f"demo{suffix}")
    back = load_long(path)
    _assert_same(ds, back)
    assert back.embeddings is None
    assert back.meta["split_source"] == "shipped 'split' column"
    assert [d.n for d in load_dataset(path)] == [60]


@pytest.mark.realdata
def test_long_format_round_trip_real(real_data: Path, tmp_path: Path) -> None:
    arc = load_routerbench(real_data / "routerbench-0shot-subset")[0]
    back = load_long(save_long(arc, tmp_path / "arc.parquet"))
    _assert_same(arc, back)
    assert int(np.isnan(back.scores).sum()) == 154


def test_long_format_tokens_and_prices(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text(
        "prompt_id,prompt,model,score,input_tokens,output_tokens,task\n"
        "p1,hello,big,1,100,50,greet\n"
        "p1,hello,small,0,100,20,greet\n"
        "p2,\"['turn one', 'turn two']\",big,0.5,10,10,chat\n"
    )
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"big": {"input_price": 10, "output_price": 30}, "small": [0.1, 0.2]}))
    ds = load_long(f, prices=prices)
    assert ds.ids.tolist() == ["p1", "p2"]
    assert ds.model_names == ["big", "small"]
    np.testing.assert_allclose(ds.costs[0], [(100 * 10 + 50 * 30) / 1e6, (100 * 0.1 + 20 * 0.2) / 1e6])
    assert math.isnan(ds.scores[1, 1])
    assert math.isnan(ds.costs[1, 1])
    assert ds.prompts == ["hello", "turn one\n\nturn two"]
    assert list(ds.groups) == ["greet", "chat"]
    assert ds.prices == {"big": (10.0, 30.0), "small": (0.1, 0.2)}
    with pytest.raises(ValueError, match="price table is needed"):
        load_long(f)
    with pytest.raises(ValueError, match="no price for model"):
        load_long(f, prices={"big": (1, 1)})


# ------------------------------------------------------------------------------- bad data
HEADER = "prompt_id,prompt,model,score,cost\n"


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("", r"bad\.csv: file is empty"),
        (HEADER, r"bad\.csv: file has a header but no data rows"),
        ("prompt_id,prompt,model,cost\np1,x,m,0.1\n", r"bad\.csv: missing required column\(s\) \['score'\]"),
        ("prompt_id,prompt,model,score\np1,x,m,1\n", r"missing required column.*cost"),
        (HEADER + "p1,x,a,1,0.1\np1,x,b,,0.2\n", r"bad\.csv: model\(s\) \['b'\] have no outcomes"),
        (
            HEADER + "p1,x,a,1,0.1\np2,y,a,1.5,0.1\n",
            r"bad\.csv: data row 2, column 'score': score 1.5 is outside",
        ),
        (HEADER + "p1,x,a,-0.2,0.1\n", r"data row 1, column 'score': score -0.2 is outside"),
        (HEADER + "p1,x,a,1,0.1\np2,y,a,0,-0.3\n", r"data row 2, column 'cost': cost -0.3 is negative"),
        (HEADER + "p1,x,a,1,0.1\np2,y,a,0,cheap\n", r"data row 2, column 'cost': 'cheap' is not a number"),
        (HEADER + "p1,x,a,yes,0.1\n", r"data row 1, column 'score': 'yes' is not a number"),
        (
            HEADER + "p1,x,a,1,0.1\np2,y,a,0,0.1\np1,x,a,0,0.1\n",
            r"duplicate prompt_id 'p1' for model 'a' with conflicting outcomes \(data row 1.*data row 3",
        ),
        (HEADER + "p1,x,a,1,0.1\np1,z,b,1,0.1\n", r"data row 2, column 'prompt': prompt_id 'p1' has two"),
        ("prompt_id,model,score,cost,split\np1,a,1,0.1,holdout\n", r"unknown label\(s\) \['holdout'\]"),
    ],
)
def test_long_format_bad_data(tmp_path: Path, body: str, match: str) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(body)
    with pytest.raises(ValueError, match=match):
        load_long(f)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        # scores on a 0-100 scale: the error says so
        (HEADER + "p1,x,a,80,0.1\np2,y,a,45,0.1\n",
         r"data row 1, column 'score': score 80 is outside .*max 80: looks like 0-100: divide by 100\)$"),
        # booleans are not scores (no silent True -> 1)
        (HEADER + "p1,x,a,1,0.1\np2,y,a,true,0.1\n",
         r"data row 2, column 'score': 'true' is a boolean, not a score; write scores as numbers on \[0, 1\]"),
        (HEADER + "p1,x,a,False,0.1\n", r"data row 1, column 'score': False is a boolean"),  # a bool column
        # a semicolon- or tab-separated file read as one column
        ("prompt_id;model;score;cost\np1;a;1;0.1\n",
         r"bad\.csv: read as one column 'prompt_id;model;score;cost': the file looks semicolon-separated"),
        ("prompt_id\tmodel\tscore\tcost\np1\ta\t1\t0.1\n", r"the file looks tab-separated"),
    ],
)
def test_long_format_odd_data_gets_a_hint(tmp_path: Path, body: str, match: str) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(body)
    with pytest.raises(ValueError, match=match) as e:
        load_long(f)
    assert "\n" not in str(e.value)


def test_long_format_scores_hints_only_when_they_fit() -> None:
    """No 0-100 hint for scores beyond 100 or below 0 (dividing would not fix them)."""
    for bad in ([0.5, 150.0], [-0.2, 0.5], [3.0, -1.0]):
        with pytest.raises(ValueError, match="outside the documented range") as e:
            check_scores(np.array(bad), "f.csv", "score")
        assert "divide by 100" not in str(e.value)


def test_long_format_boolean_parquet_scores_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "b.parquet"
    pd.DataFrame({"prompt_id": ["p1", "p2"], "model": ["a", "a"], "score": [True, False],
                  "cost": [0.1, 0.1]}).to_parquet(f)
    with pytest.raises(ValueError, match=r"data row 1, column 'score': True is a boolean"):
        load_long(f)


def test_long_format_price_table_did_you_mean(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("prompt_id,model,score,input_tokens,output_tokens\n"
                 "p1,gpt-4o,1,100,50\np1,claude-haiku,0,100,20\n")
    with pytest.raises(ValueError, match=r"no price for model\(s\) \['claude-haiku', 'gpt-4o'\] .*did you mean "
                       r"'claude-haikuu' for 'claude-haiku', 'gpt4o' for 'gpt-4o' \(as spelled in the price"):
        load_long(f, prices={"gpt4o": (5, 15), "claude-haikuu": (0.25, 1.25)})
    with pytest.raises(ValueError, match="no price for model") as e:  # nothing close: no guess
        load_long(f, prices={"gpt-4o": (5, 15), "llama": (0.2, 0.2)})
    assert "did you mean" not in str(e.value)


def test_routellm_loaders_still_read_true_false_scores(tmp_path: Path) -> None:
    """The loaders whose sources document True/False correctness (RouteLLM MMLU, GSM8K) keep reading it as
    1/0: only the long format (the user's own scores) refuses booleans."""
    assert numeric_column(pd.Series([True, False]), "f", "m").tolist() == [1.0, 0.0]
    assert numeric_column(pd.Series(["True", "False", ""]), "f", "m")[:2].tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="is a boolean"):
        numeric_column(pd.Series(["True", "0.5"]), "f", "m", booleans=False)


def test_long_format_exact_duplicate_rows_are_fine(tmp_path: Path) -> None:
    f = tmp_path / "dup.csv"
    f.write_text(HEADER + "p1,x,a,1,0.1\np1,x,a,1,0.1\np2,y,a,0,0.2\n")
    assert load_long(f).n == 2


def test_empty_parquet(tmp_path: Path) -> None:
    f = tmp_path / "empty.parquet"
    pd.DataFrame({"prompt_id": [], "model": [], "score": [], "cost": []}).to_parquet(f)
    with pytest.raises(ValueError, match=r"empty\.parquet: file has a header but no data rows"):
        load_long(f)


WIDE = "sample_id,prompt,eval_name,m1,m2,m1|total_cost,m2|total_cost\n"


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("", r"wide\.csv: file is empty"),
        (
            "sample_id,prompt,m1,m1|total_cost\ns1,\"['q']\",1,0.1\n",
            r"wide\.csv: missing required column\(s\) \['eval_name'\]",
        ),
        ("sample_id,prompt,eval_name,m1\ns1,q,t,1\n", r"no '<model>\|total_cost' columns"),
        (
            "sample_id,prompt,eval_name,m1|total_cost\ns1,q,t,0.1\n",
            r"model\(s\) \['m1'\] have a '\|total_cost' column but no score",
        ),
        (
            WIDE + "s1,\"['q']\",t,1,,0.1,0.2\ns2,\"['r']\",t,0,,0.1,0.2\n",
            r"wide\.csv: model\(s\) \['m2'\] have no outcomes",
        ),
        (WIDE + "s1,q,t,1,0,0.1,0.2\ns2,r,t,2,0,0.1,0.2\n", r"data row 2, column 'm1': score 2 is outside"),
        (WIDE + "s1,q,t,1,0,0.1,free\n", r"data row 1, column 'm2\|total_cost': 'free' is not a number"),
        (WIDE + "s1,q,t,1,0,-0.1,0.2\n", r"data row 1, column 'm1\|total_cost': cost -0.1 is negative"),
        (WIDE + "s1,q,t,1,0,0.1,0.2\ns1,q,t,0,0,0.1,0.2\n", r"duplicate prompt id 's1'.*conflicting scores"),
    ],
)
def test_routerbench_wide_bad_data(tmp_path: Path, body: str, match: str) -> None:
    f = tmp_path / "wide.csv"
    f.write_text(body)
    with pytest.raises(ValueError, match=match):
        load_routerbench(f)


def test_routerbench_wide_small_file_and_duplicate_ids(tmp_path: Path) -> None:
    f = tmp_path / "wide.csv"
    f.write_text(
        WIDE
        + "s1,\"['q one']\",task-a,1,0,0.1,0.2\n"
        + "s1,\"['q one', 'q one']\",task-a,,1,0.2,0.4\n"  # same id, different shipped prompt: kept
        + "s2,\"['q two']\",task-b,0,1,0.1,0.2\n"
    )
    dss = load_dataset(f)
    assert [d.name for d in dss] == ["task_a", "task_b"]
    a = dss[0]
    assert a.ids.tolist() == ["s1#0", "s1#1"]
    assert a.prompts == ["q one", "q one"]
    assert a.meta["n_duplicate_sample_ids"] == 1
    assert int(np.isnan(a.scores).sum()) == 1


# ------------------------------------------------------------------------------ lightness
def test_import_is_light() -> None:
    code = (
        "import sys, knnroute.data, knnroute.embed; "
        "heavy = [m for m in ('pandas', 'torch', 'sentence_transformers', 'tqdm') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "python")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == ""


def test_to_long_columns() -> None:
    df = to_long(_tiny(2, 2))
    assert list(df.columns) == ["prompt_id", "prompt", "model", "score", "cost"]
    assert len(df) == 4


# ------------------------------------------------------------------------------- data spec
def _spec_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data folder with two registered fake datasets (one model pool) and a long-format file."""
    from knnroute.data import registry

    monkeypatch.setattr(registry, "REAL_DATASETS", dict(registry.REAL_DATASETS))
    root = tmp_path / "data"
    for name in ("part-a", "part-b"):
        (root / name).mkdir(parents=True)
        (root / name / "MARK").write_text(name)

    def loader(folder: Path, **kw: object) -> list[RoutingDataset]:
        d = make_demo(n=90, seed=1 if folder.name == "part-a" else 2)
        tag = (folder / "MARK").read_text()
        return [d.replace(name=tag, ids=[f"{tag}/{i}" for i in d.ids], meta={**d.meta, "kw": kw})]

    for name in ("part-a", "part-b"):
        register_dataset(name, name, loader, "test part", lambda p, n=name: (p / "MARK").is_file()
                         and (p / "MARK").read_text() == n)
    save_long(_tiny(6, 2), root / "tiny.csv")
    monkeypatch.setenv("KNNROUTE_DATA", str(root))
    return root


def test_resolve_spec_every_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _spec_data(tmp_path, monkeypatch)

    def names(spec: str) -> list[str]:
        return [d.name for d in resolve_spec(spec)]

    # demo, its generated name, and blanks around items
    assert names("demo") == names(" demo-generated ") == ["demo-generated"]
    assert resolve_spec("demo")[0].generated
    # registered names, a comma list in the spec's order, blank items dropped
    assert names("part-b, part-a,,") == ["part-b", "part-a"]
    # all: every registered dataset whose folder exists, in registry order
    assert names("all") == ["part-a", "part-b"]
    assert names("all,demo") == ["part-a", "part-b", "demo-generated"]
    # a folder path (recognised by the registered detect), a file path, a file name under the data folder
    assert names(str(root / "part-b")) == ["part-b"]
    assert names(str(root / "tiny.csv")) == names("tiny.csv") == ["tiny"]
    # the seed reaches the real-data loaders, never the demo
    assert resolve_spec("part-a", seed=4)[0].meta["kw"] == {"seed": 4}
    np.testing.assert_array_equal(resolve_spec("demo", seed=4)[0].scores, make_demo().scores)


@pytest.mark.parametrize(
    ("spec", "exc", "match"),
    [
        ("", ValueError, "empty data spec"),
        (" , ", ValueError, "empty data spec"),
        ("demo,no-such-benchmark", FileNotFoundError, "known dataset name"),
    ],
)
def test_resolve_spec_errors(spec: str, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        resolve_spec(spec)


def test_resolve_spec_all_without_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KNNROUTE_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no real data found"):
        resolve_spec("all")


def test_pool_and_prepare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from knnroute.data.spec import pool
    from knnroute.embed.prepare import embed_datasets, prepare_data

    _spec_data(tmp_path, monkeypatch)
    a, b = resolve_spec("part-a,part-b")
    assert pool([a], "x") is a
    both = pool([a, b], "part-a,part-b")
    assert both.name == "part-a,part-b"
    assert both.n == a.n + b.n
    assert both.split is not None
    with pytest.raises(ValueError, match="different models"):
        pool([a, _tiny(6, 2)], "mixed")
    # prepare: the same datasets, embedded (the demo parts carry embeddings, so they are kept as they are)
    (pooled,) = prepare_data("part-a,part-b", pooled=True, progress=False)
    np.testing.assert_array_equal(pooled.embeddings, both.embeddings)
    assert [d.name for d in prepare_data("part-b,demo", progress=False)] == ["part-b", "demo-generated"]
    t = _tiny(6, 2)
    X = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    (e,) = embed_datasets([t], X, progress=False)
    assert e.embeddings is not None
    assert e.embeddings.shape == (6, 4)


@pytest.mark.realdata
def test_resolve_spec_real(real_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KNNROUTE_DATA", str(real_data))
    assert [d.name for d in resolve_spec("routerbench, routellm-gsm8k")] == [
        "arc_challenge", "mbpp", "winograde", "routellm-gsm8k",
    ]
    # a folder name under the data folder, and its path
    assert [d.name for d in resolve_spec("routerarena-cached")] == ["routerarena"]
    assert [d.name for d in resolve_spec(str(real_data / "routellm-evals"))] == [
        "routellm-mmlu", "routellm-gsm8k", "routellm-mtbench",
    ]
    # the seed carves the validation share of the shipped train split; shipped test untouched
    s0, s1 = (resolve_spec("routerbench", seed=s)[0].split for s in (0, 1))
    assert (s0 == "test").tolist() == (s1 == "test").tolist()
    assert (s0 != s1).any()
    every = [d.name for d in resolve_spec("all")]
    assert every[:4] == ["arc_challenge", "mbpp", "winograde", "llmrouter"]
    assert every[-1] == "math-v"
