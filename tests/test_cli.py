"""The main command: ``knnroute eval`` on the built-in demo (JSON schema, PNG output, errors)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from knnroute.cli import COMMANDS, build_parser, main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, Path, str]:
    out = tmp_path_factory.mktemp("eval")
    json_path, plot_dir = out / "res" / "demo.json", out / "plots"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(
            [
                "eval",
                "--seeds",
                "2",
                "--no-progress",
                "--json",
                str(json_path),
                "--plot",
                str(plot_dir),
                "--diagnostics",
                "--markdown",
                str(out / "res" / "tables.md"),
            ]
        )
    return rc, json_path, plot_dir, buf.getvalue()


def test_eval_demo_prints_a_labelled_table(demo_run: tuple[int, Path, Path, str]) -> None:
    rc, _, _, text = demo_run
    assert rc == 0
    assert "GENERATED" in text
    for name in ("oracle", "random", "best-single", "knn-10", "knn-100", "knn-tuned", "AUC", "GAIN"):
        assert name in text
    assert "TwoNN" in text


def test_eval_json_schema(demo_run: tuple[int, Path, Path, str]) -> None:
    import pandas as pd

    _, json_path, _, _ = demo_run
    payload = json.loads(json_path.read_text())
    assert {"conventions", "results", "summary", "curves", "datasets", "meta", "diagnostics"} <= set(payload)
    for key in ("hull", "auc", "c_max", "random", "oracle", "gain", "split", "tuning"):
        assert key in payload["conventions"]
    df = pd.DataFrame(payload["results"])
    assert {"dataset", "router", "seed", "auc", "gain", "auc_oracle", "auc_best_single", "sel_mean"} <= set(
        df
    )
    routers = set(df["router"])
    assert {"oracle", "random", "best-single", "knn-10", "knn-100", "knn-tuned"} <= routers
    assert any(r.startswith("single:") for r in routers)
    assert sorted(df["seed"].unique()) == [0, 1]
    assert df["generated"].all()
    assert df["auc"].between(0, 100).all()
    oracle = df[df.router == "oracle"].set_index("seed")["auc"]
    best = df[df.router == "best-single"].set_index("seed")["auc"]
    for _, row in df.iterrows():
        assert row["auc_oracle"] == pytest.approx(oracle[row["seed"]])
        if np.isfinite(row["gain"]):
            assert row["gain"] == pytest.approx(
                (row["auc"] - best[row["seed"]]) / (oracle[row["seed"]] - best[row["seed"]])
            )
    tuned = df[df.router == "knn-tuned"]
    assert {"k", "weighting", "shrinkage", "val_auc"} <= set(tuned.dropna(axis=1).columns)
    # Curves: hulls for every (router, seed), full points for the plotted seed.
    cv = pd.DataFrame(payload["curves"])
    assert {"dataset", "router", "seed", "hull_cost", "hull_score", "auc"} <= set(cv)
    assert cv[(cv.seed == 0) & (cv.router == "knn-100")]["cost"].map(len).iloc[0] > 1
    s = pd.DataFrame(payload["summary"])
    assert {"auc_mean", "auc_std", "gain_mean", "gain_std", "n_seeds"} <= set(s)
    assert payload["diagnostics"][0]["locality"]["r"] is not None
    savings = ["match_cost_share", "match_saving_usd_per_1k", "score_at_cheapest", "score_at_cheapest_gain"]
    refs = ["best_model", "best_model_cost", "best_model_score", "cheapest_model", "cheapest_model_cost",
            "cheapest_model_score"]
    assert {*savings, *refs} <= set(df)
    assert (df[df.router == "best-single"]["match_cost_share"] == 1.0).all()
    assert (df[df.router == "oracle"]["match_cost_share"] <= 1.0 + 1e-12).all()
    assert {f"{k}_{x}" for k in savings for x in ("mean", "std")} | {"match_never", "best_model"} <= set(s)
    assert "savings" in payload["conventions"]


def test_eval_prints_savings_and_draws_them(demo_run: tuple[int, Path, Path, str]) -> None:
    _, _, plot_dir, text = demo_run
    block = text[text.index("SAVINGS per dataset"):]
    assert text.index("GAIN per dataset") < text.index("SAVINGS per dataset")
    assert "best model:" in block and "cheapest model:" in block and "cost to match" in block
    assert "saves / 1k queries" in block and "key: every number is read off the router's hull" in block
    rows = block.split("key:")[0]
    assert "oracle" in rows and "knn-tuned" in rows and "single:" not in rows
    assert "100.0% ± 0.0%" in rows  # best-single matches the best model at exactly its cost
    png = plot_dir / "savings.png"
    assert f"plot: {png}" in text
    data = png.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 20_000
    assert int.from_bytes(data[16:20], "big") >= 800 and int.from_bytes(data[20:24], "big") >= 500


def test_eval_writes_the_readme_tables_as_markdown(demo_run: tuple[int, Path, Path, str]) -> None:
    from knnroute.evaluate.report import format_markdown

    _, json_path, _, text = demo_run
    md_path = json_path.parent / "tables.md"
    assert f"markdown: {md_path}" in text
    md = md_path.read_text(encoding="utf-8")
    payload = json.loads(json_path.read_text(encoding="utf-8"))
    assert md == format_markdown(payload["summary"])  # the same tables from the saved JSON
    assert md.startswith("*GENERATED demo data")
    knn = next(x for x in md.splitlines() if x.startswith("| knn-tuned |"))
    row = next(r for r in payload["summary"] if r["router"] == "knn-tuned")
    assert f"{row['auc_mean']:.2f} ± {row['auc_std']:.2f}" in knn
    assert "| demo-generated | frontier, $" in md  # the savings table names the best model


def test_eval_png_is_written(demo_run: tuple[int, Path, Path, str]) -> None:
    _, _, plot_dir, _ = demo_run
    pngs = sorted(p for p in plot_dir.glob("*.png") if p.name != "savings.png")
    assert [p.name for p in pngs] == ["demo-generated.png"]
    data = pngs[0].read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 20_000  # a drawn figure, not an empty canvas
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 800
    assert height >= 500


def test_eval_rejects_unknown_router(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--routers", "knn-10,nonsense", "--no-progress"]) == 2
    assert "unknown router" in capsys.readouterr().err


def test_eval_lambda_grid_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "eval",
                "--seeds",
                "1",
                "--routers",
                "knn-10",
                "--lambdas",
                "grid:50",
                "--no-progress",
                "--no-singles",
            ]
        )
        == 0
    )
    assert "50-point lambda grid" in capsys.readouterr().out


def test_parser_registry_and_help() -> None:
    assert COMMANDS[0].name == "eval"
    parser = build_parser()
    args = parser.parse_args(["eval"])
    assert args.data == "demo"
    assert args.seeds == 5
    assert main([]) == 2  # no subcommand: help and a usage error status


def test_python_dash_m_entry_point() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "knnroute", "eval", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=_env(),
    )
    assert res.returncode == 0
    assert "--data" in res.stdout
    assert "--routers" in res.stdout


def _env() -> dict[str, str]:
    """The subprocess's environment: the installed knnroute (never the checkout's ``python/`` folder, whose
    ``knnroute_core`` has no compiled module in a non-editable install, as in CI)."""
    import os

    return dict(os.environ)


# ------------------------------------------------------------- one data spec for every command
def _register_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data folder with two registered fake datasets (demo subsets: one model pool) and a long file."""
    from knnroute.data import RoutingDataset, make_demo, register_dataset, registry, save_long

    monkeypatch.setattr(registry, "REAL_DATASETS", dict(registry.REAL_DATASETS))
    root = tmp_path / "data"

    def loader(folder: Path, **_: object) -> list[RoutingDataset]:
        d = make_demo(n=120, seed=len(folder.name))
        return [d.replace(name=folder.name, ids=[f"{folder.name}/{i}" for i in d.ids])]

    for name in ("part-a", "part-bb"):
        (root / name).mkdir(parents=True)
        register_dataset(name, name, loader, "test part")
    tiny = RoutingDataset(
        name="tiny", model_names=["x", "y"], scores=np.eye(4, 2), costs=np.full((4, 2), 1e-4),
        prompts=[f"p{i}" for i in range(4)],
    )
    save_long(tiny, root / "tiny.csv")
    monkeypatch.setenv("KNNROUTE_DATA", str(root))
    return root


def _run(argv: list[str]) -> tuple[int, str]:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    return rc, buf.getvalue()


def _fit_report(out: str) -> dict:
    """fit's stdout is the JSON report and nothing else (the human lines go to stderr)."""
    return json.loads(out)


def _run_both(argv: list[str]) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def test_eval_accepts_demo_and_a_comma_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _register_parts(tmp_path, monkeypatch)
    js = tmp_path / "e.json"
    rc, out = _run(["eval", "--data", "demo, part-a,part-bb", "--seeds", "1", "--routers", "knn-10",
                    "--jobs", "1", "--no-progress", "--json", str(js)])
    assert rc == 0
    assert "GENERATED" in out
    payload = json.loads(js.read_text())
    assert [d["name"] for d in payload["datasets"]] == ["demo-generated", "part-a", "part-bb"]
    rc, _ = _run(["eval", "--data", "demo,demo", "--seeds", "1", "--routers", "knn-10", "--jobs", "1",
                  "--no-progress", "--json", str(js)])
    assert rc == 0
    names = [d["name"] for d in json.loads(js.read_text())["datasets"]]
    assert names == ["demo-generated", "demo-generated#2"]


def test_fit_accepts_demo_and_a_comma_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _register_parts(tmp_path, monkeypatch)
    rc, out, err = _run_both(["fit", "--data", "demo", "--out", str(tmp_path / "d.knnr"), "--k", "10",
                              "--no-progress"])
    assert rc == 0
    assert "GENERATED" in err
    rep = _fit_report(out)
    assert rep["dataset"] == "demo-generated"
    assert rep["n_train"] + rep["n_val"] + rep["n_test"] == 1200
    # several datasets of one model pool: pooled into one router
    rc, out = _run(["fit", "--data", "part-a,part-bb", "--out", str(tmp_path / "p.knnr"), "--k", "10",
                    "--no-progress"])
    assert rc == 0
    rep = _fit_report(out)
    assert rep["dataset"] == "part-a,part-bb"
    assert rep["n_train"] + rep["n_val"] + rep["n_test"] == 240


def test_fit_rejects_datasets_with_different_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _register_parts(tmp_path, monkeypatch)
    assert main(["fit", "--data", "demo,tiny.csv", "--out", str(tmp_path / "x.knnr"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "knnroute fit: error:" in err
    assert "different models" in err
    assert not (tmp_path / "x.knnr").exists()
    assert main(["fit", "--data", " , ", "--out", str(tmp_path / "x.knnr"), "--no-progress"]) == 2
    assert "empty data spec" in capsys.readouterr().err


def test_route_batch_accepts_a_data_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas as pd

    _register_parts(tmp_path, monkeypatch)
    router = tmp_path / "d.knnr"
    assert _run(["fit", "--data", "demo", "--out", str(router), "--k", "10", "--no-progress"])[0] == 0
    rc, out = _run(["route-batch", "--router", str(router), "--data", "demo,part-a", "--output",
                    str(tmp_path / "out"), "--no-progress"])
    assert rc == 0
    assert json.loads(out)["rows"] == 1320
    df = pd.read_parquet(tmp_path / "out")
    assert {"dataset", "id", "model"} <= set(df.columns)
    assert df.groupby("dataset").size().to_dict() == {"demo-generated": 1200, "part-a": 120}
    with pytest.raises(SystemExit):  # --input and --data are exclusive
        build_parser().parse_args(["route-batch", "--router", "r", "--data", "demo", "--input", "x",
                                   "--output", "o"])


@pytest.mark.realdata
def test_eval_and_fit_on_real_data_specs(
    real_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same real spec (a name and a comma list with the demo) on eval and fit (MiniLM, cached)."""
    monkeypatch.setenv("KNNROUTE_DATA", str(real_data))
    js = tmp_path / "e.json"
    rc, _ = _run(["eval", "--data", "routellm-mtbench,demo", "--seeds", "1", "--routers", "knn-10", "--jobs",
                  "1", "--no-progress", "--json", str(js)])
    assert rc == 0
    names = [d["name"] for d in json.loads(js.read_text())["datasets"]]
    assert names == ["routellm-mtbench", "demo-generated"]
    rc, out = _run(["fit", "--data", "routellm-mtbench", "--out", str(tmp_path / "m.knnr"), "--k", "5",
                    "--no-progress"])
    assert rc == 0
    assert _fit_report(out)["n_train"] > 0


# ------------------------------------------------------------- fit: --json, --shrinkage, small data (issue 32)
def test_fit_json_stdout_parses_as_json(tmp_path: Path) -> None:
    """`fit --json > report.json` is valid JSON: stdout holds the report only, the human lines go to stderr.
    Plain `fit` does the same (the documented "report (JSON on stdout)")."""
    for extra in (["--json"], []):
        r = subprocess.run(
            [sys.executable, "-m", "knnroute", "fit", "--data", "demo", "--out", str(tmp_path / "d.knnr"),
             "--k", "10", *extra],
            capture_output=True, text=True, env=_env(), timeout=300,
        )
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout)
        assert report["dataset"] == "demo-generated" and report["file"].endswith("d.knnr")
        assert "GENERATED" in r.stderr and "fitted ProductionRouter" in r.stderr
        assert "default: a request without lambda" in r.stderr


def test_fit_shrinkage_is_stored_and_constrains_the_tuner(tmp_path: Path) -> None:
    import knnroute

    rc, out, _ = _run_both(["fit", "--data", "demo", "--out", str(tmp_path / "s.knnr"), "--shrinkage", "10",
                            "-q"])
    assert rc == 0
    rep = _fit_report(out)
    assert rep["config"]["shrinkage"] == 10.0  # tuned k and weighting, the given shrinkage
    assert knnroute.load(tmp_path / "s.knnr").knn.shrinkage == 10.0
    # with a fixed k as well
    rc, out, _ = _run_both(["fit", "--data", "demo", "--out", str(tmp_path / "k.knnr"), "--k", "20",
                            "--shrinkage", "2.5", "-q"])
    assert rc == 0
    assert _fit_report(out)["config"] == {"k": 20, "weighting": "uniform", "temperature": 0.05, "shrinkage": 2.5}
    assert knnroute.load(tmp_path / "k.knnr").knn.shrinkage == 2.5
    # without --shrinkage the tuner may choose any shrinkage of its grid (the demo's choice is not pinned)
    rc, out, _ = _run_both(["fit", "--data", "demo", "--out", str(tmp_path / "t.knnr"), "-q"])
    assert rc == 0
    from knnroute.routers.tuned import SHRINKAGES

    assert _fit_report(out)["config"]["shrinkage"] in SHRINKAGES


@pytest.mark.parametrize("bad", ["-1", "nan", "inf", "ten"])
def test_fit_shrinkage_bad_values_are_one_line_errors(tmp_path: Path, bad: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "knnroute", "fit", "--data", "demo", "--out", str(tmp_path / "x.knnr"),
         f"--shrinkage={bad}"],
        capture_output=True, text=True, env=_env(), timeout=120,
    )
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert "argument --shrinkage" in last and ("must be a finite number >= 0" in last or "not a number" in last)
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "x.knnr").exists()


def test_fit_help_explains_shrinkage_and_json() -> None:
    fit = next(a for a in build_parser()._actions if a.dest == "command").choices["fit"]  # type: ignore[union-attr]
    text = fit.format_help()
    assert "--shrinkage X" in text and "gateway" in text
    assert "--json" in text


def test_fit_warns_when_tuning_rests_on_few_validation_prompts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register_parts(tmp_path, monkeypatch)  # part-a: 120 prompts -> 12 validation prompts
    rc, out, err = _run_both(["fit", "--data", "part-a", "--out", str(tmp_path / "a.knnr"), "-q"])
    assert rc == 0
    rep = _fit_report(out)
    assert rep["n_val"] < 30
    lines = [ln for ln in err.splitlines() if "warning" in ln]
    assert lines == [f"knnroute fit: warning: tuning rests on {rep['n_val']} validation prompts (fewer than 30): "
                     "the chosen k, weighting and shrinkage are noisy; give more data or a fixed --k"]
    assert rep["warnings"] == [lines[0].removeprefix("knnroute fit: warning: ")]
    # enough validation prompts (the demo: 120): no warning
    rc, out, err = _run_both(["fit", "--data", "demo", "--out", str(tmp_path / "d.knnr"), "-q"])
    assert rc == 0 and "warning" not in err and _fit_report(out)["warnings"] == []


def test_eval_warns_when_tuned_routers_rest_on_few_validation_prompts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register_parts(tmp_path, monkeypatch)
    rc, _, err = _run_both(["eval", "--data", "part-a", "--seeds", "1", "--routers", "knn-tuned", "--jobs", "1",
                            "-q"])
    assert rc == 0
    assert err.strip() == ("knnroute eval: warning: part-a: knn-tuned tune on 12 validation prompts (fewer than 30): "
                           "their choices are noisy")
    rc, _, err = _run_both(["eval", "--data", "part-a", "--seeds", "1", "--routers", "knn-10", "--jobs", "1", "-q"])
    assert rc == 0 and err == ""  # nothing tuned: nothing to warn about
