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


def test_eval_png_is_written(demo_run: tuple[int, Path, Path, str]) -> None:
    _, _, plot_dir, _ = demo_run
    pngs = sorted(plot_dir.glob("*.png"))
    assert [p.name for p in pngs] == ["demo-generated.png"]
    data = pngs[0].read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 20_000  # a drawn figure, not an empty canvas
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 800 and height >= 500


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
    assert args.data == "demo" and args.seeds == 5
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
    assert "--data" in res.stdout and "--routers" in res.stdout


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "python")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
