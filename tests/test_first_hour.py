"""A new user's first hour (issue 20): progress that moves, ``--prices`` from the CLI, errors and help that
explain themselves, tables and plots that say what they show, router files and a service without surprises.

Each test pins one friction item; most fail on the code before the issue (a bar that moved every 1,024
prompts, no ``--prices``, ``0600`` router files, raw reST in ``--help``...).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import knnroute
from knnroute import _progress
from knnroute.cli import COMMANDS, build_parser, main, plain
from knnroute.data.long import load_long
from knnroute.data.registry import load_dataset
from knnroute.embed import embed_texts, encoders
from knnroute.embed.encoders import (
    EMBEDDERS,
    PROGRESS_MIN_ITEMS,
    PROGRESS_STEP,
    CallableEmbedder,
    register_embedder,
)
from knnroute.evaluate import plots
from knnroute.evaluate.report import format_notes
from knnroute.production import save
from knnroute.production.budgets import BudgetTable, describe_default

FAKE = "first-hour-fake"


def _fake_vectors(texts: list[str]) -> np.ndarray:
    """Deterministic 16-d vectors from each text's CRC (no model: the CLI tests stay fast)."""
    return np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(16) for t in texts])


@pytest.fixture(autouse=True)
def _fake_embedder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("KNNROUTE_CACHE", str(tmp_path / "cache"))
    register_embedder(FAKE, lambda **kw: CallableEmbedder(_fake_vectors, identity=FAKE, dim=16), overwrite=True)
    yield
    EMBEDDERS.pop(FAKE, None)  # leave the registry as other test modules expect it
    for key in [k for k in encoders._instances if k[0] == FAKE]:
        del encoders._instances[key]


class _Counter:
    """A progress sink: records every update."""

    def __init__(self) -> None:
        self.updates: list[int] = []

    def update(self, n: int) -> None:
        self.updates.append(n)

    def set_description_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------------------------- 1. progress
def test_encode_progress_moves_every_32_prompts() -> None:
    emb = CallableEmbedder(_fake_vectors, identity="x", dim=16)
    sink = _Counter()
    X = emb.encode([f"prompt {i}" for i in range(2000)], batch_size=64, progress=sink)
    assert X.shape == (2000, 16)
    assert len(sink.updates) == 63  # ceil(2000 / 32): it moved every 1,024 before
    assert max(sink.updates) == PROGRESS_STEP == 32 and sum(sink.updates) == 2000
    sink = _Counter()
    emb.encode([f"p{i}" for i in range(100)], batch_size=16, progress=sink)
    assert sink.updates == [16] * 6 + [4]  # a smaller model batch moves it more often still


def test_embed_texts_bar_moves_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = _Counter()
    monkeypatch.setattr(CallableEmbedder, "progress_bar", lambda self, total: sink)
    embed_texts([f"t{i}" for i in range(300)], FAKE, progress=True, batch_size=64)
    assert len(sink.updates) == 10 and sum(sink.updates) == 300  # a 300-prompt file gets a bar now


def test_short_files_get_a_bar() -> None:
    assert PROGRESS_MIN_ITEMS <= 300  # good.csv (300 prompts) embedded 12 s with no bar at all


def test_bar_is_silent_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    assert _progress.bar(100, "embed") is None  # capsys: stderr is not a TTY
    _progress.step("fit: something", enabled=False)
    assert capsys.readouterr().err == ""


def test_bar_on_a_terminal_shows_rate_and_time_left(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_progress, "_is_tty", lambda: True)
    b = _progress.bar(100, "embed", enabled=True)
    try:
        assert b is not None
        b.update(10)
        text = str(b)
        assert "10/100" in text and "<" in text and "item/s" in text  # elapsed<left, rate
    finally:
        b.close()
    assert _progress.bar(100, "embed", enabled=False) is None  # --quiet wins on a terminal too


def test_bar_on_a_terminal_that_reports_no_size(monkeypatch: pytest.MonkeyPatch) -> None:
    # script(1) and some container runtimes report 0 x 0: tqdm then drew nothing for minutes
    monkeypatch.setattr(_progress, "_is_tty", lambda: True)
    monkeypatch.setattr(_progress, "_columns", lambda: 0)
    b = _progress.bar(100, "embed")
    try:
        assert b is not None and b.ncols == 100 and b.nrows == 40
    finally:
        b.close()


@pytest.mark.parametrize("command", ["eval", "fit", "route-batch", "serve"])
def test_every_command_takes_quiet(command: str) -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    parser = sub.choices[command]  # type: ignore[index]
    assert any("-q" in a.option_strings and "--quiet" in a.option_strings for a in parser._actions)


@pytest.fixture(scope="module")
def demo_eval(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, str, Path]:
    d = tmp_path_factory.mktemp("eval")
    rc, out, err = _run(["eval", "--seeds", "2", "--jobs", "1", "-q", "--plot", str(d)])
    return rc, out, err, d


def test_eval_quiet_keeps_stderr_empty(demo_eval: tuple[int, str, str, Path]) -> None:
    rc, _, err, _ = demo_eval
    assert rc == 0 and err == ""


def test_fit_names_its_steps_and_explains_the_default_lambda(tmp_path: Path) -> None:
    rc, out, err = _run(["fit", "--data", "demo", "--out", str(tmp_path / "d.knnr")])
    assert rc == 0
    assert "fit: loading demo" in err and "fit: tuning" in err and "budget table" in err
    report = json.loads(out)  # stdout is the JSON report alone; the human lines are on stderr
    assert report["default_lambda"] == 0.0
    assert "lambda = 0" in report["default_lambda_gives"]
    assert "default: a request without lambda or max_cost gets lambda = 0" in err
    assert "highest predicted score" in err


# ---------------------------------------------------------------------------------- 2. --prices
@pytest.fixture
def token_data(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    rows = ["prompt_id,prompt,model,score,input_tokens,output_tokens"]
    for i in range(60):
        for m, q in (("big", 0.8), ("small", 0.4)):
            rows.append(f"p{i},question number {i} about topic {i % 4},{m},{int(rng.random() < q)},"
                        f"{50 + i},{20 + i % 7}")
    f = tmp_path / "tokens.csv"
    f.write_text("\n".join(rows) + "\n")
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"big": [10.0, 30.0], "small": [0.1, 0.2]}))
    return f, prices


def test_eval_cli_with_prices(token_data: tuple[Path, Path], tmp_path: Path) -> None:
    f, prices = token_data
    js = tmp_path / "r.json"
    rc, out, err = _run(["eval", "--data", str(f), "--prices", str(prices), "--embedder", FAKE, "--seeds", "1",
                         "--jobs", "1", "-q", "--json", str(js)])
    assert rc == 0, err
    (ds,) = json.loads(js.read_text())["datasets"]
    assert ds["models"] == ["big", "small"] and ds["missing_cost_cells"] == 0


def test_fit_and_route_batch_cli_with_prices(token_data: tuple[Path, Path], tmp_path: Path) -> None:
    f, prices = token_data
    router = tmp_path / "t.knnr"
    rc, _, err = _run(["fit", "--data", str(f), "--prices", str(prices), "--embedder", FAKE, "--k", "5",
                       "-q", "--out", str(router)])
    assert rc == 0, err
    prod = knnroute.load(router)
    assert prod.prices == {"big": (10.0, 30.0), "small": (0.1, 0.2)}
    rc, out, err = _run(["route-batch", "--router", str(router), "--data", str(f), "--prices", str(prices),
                         "-q", "--output", str(tmp_path / "decisions")])
    assert rc == 0, err
    assert json.loads(out)["rows"] == 60


def test_tokens_without_prices_say_what_to_pass(token_data: tuple[Path, Path]) -> None:
    f, _ = token_data
    rc, _, err = _run(["eval", "--data", str(f), "--embedder", FAKE, "-q"])
    assert rc == 2
    assert len(err.strip().splitlines()) == 1  # one clear line, no traceback
    assert "--prices FILE" in err and "input_price" in err


def test_prices_with_nothing_to_price_is_an_error(token_data: tuple[Path, Path]) -> None:
    _, prices = token_data
    rc, _, err = _run(["eval", "--data", "demo", "--prices", str(prices), "-q"])
    assert rc == 2 and "--prices applies to long-format files" in err


def test_route_batch_prices_needs_data(token_data: tuple[Path, Path], tmp_path: Path) -> None:
    _, prices = token_data
    rc, _, err = _run(["route-batch", "--router", "x.knnr", "--input", "x.parquet", "--prices", str(prices),
                       "--output", str(tmp_path / "o")])
    assert rc == 2 and "--prices goes with --data" in err


def test_missing_cost_error_shows_accepted_forms(tmp_path: Path) -> None:
    f = tmp_path / "nocost.csv"
    f.write_text("prompt_id,model,score\np1,m,1\n")
    with pytest.raises(ValueError, match=r"missing required column\(s\) \['cost'\]") as e:
        load_long(f)
    assert "input_tokens + output_tokens" in str(e.value) and "--prices FILE" in str(e.value)
    f.write_text("prompt_id,model,score,input_tokens\np1,m,1,10\n")
    with pytest.raises(ValueError, match="output_tokens"):
        load_long(f)


def test_typo_column_error_names_the_missing_column(tmp_path: Path) -> None:
    f = tmp_path / "typo.csv"
    f.write_text("promptid,prompt,model,score,cost\np1,x,m,1,0.1\n")
    with pytest.raises(ValueError, match=r"missing \['prompt_id'\]") as e:
        load_dataset(f)
    msg = str(e.value)
    assert "'promptid' -> 'prompt_id'" in msg
    assert "optional: prompt" in msg  # prompt is optional, not listed as required
    rc, _, err = _run(["eval", "--data", str(f), "-q"])
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "prompt_id" in err


# ------------------------------------------------------------------------------ 4. terms explained
@pytest.mark.parametrize("command", [c.name for c in COMMANDS])
def test_help_has_no_rest_markup(command: str) -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    text = sub.choices[command].format_help()  # type: ignore[index]
    for markup in ("``", ":mod:", ":func:", ":class:"):
        assert markup not in text, f"{command} --help shows {markup}"


def test_plain_drops_roles_and_literals() -> None:
    assert plain(":func:`~knnroute.data.spec.resolve_spec` reads ``--data``; see :mod:`knnroute.data`") == (
        "resolve_spec reads --data; see knnroute.data"
    )


def test_eval_table_footer_explains_every_column(demo_eval: tuple[int, str, str, Path]) -> None:
    _, out, _, _ = demo_eval
    assert "sel (App. D)  the paper's Appendix D selection utility" in out
    assert "mean ± std over the 2 split seeds" in out
    assert "gain  (AUC - AUC best-single)" in out
    assert "AUC per dataset (mean over seeds" in out
    assert "one seed" in format_notes(1)


def test_plot_legend_shows_the_table_mean_and_names_the_seed() -> None:
    from knnroute.evaluate.curves import Curve

    cv = Curve(cost=np.array([0.5]), score=np.array([60.0]), lams=np.array([0.0]), c_max=1.0,
               hull_cost=np.array([0.0, 0.5]), hull_score=np.array([0.0, 60.0]), auc=68.61)
    label = plots._legend("knn-100", cv, {"knn-100": (70.02, 1.19)}, "seed 0")
    assert label == "knn-100 (AUC 70.02 ± 1.19; seed 0: 68.61)"
    assert "mean ± std" in plots.CAPTION


def test_eval_plot_written(demo_eval: tuple[int, str, str, Path]) -> None:
    _, out, _, d = demo_eval
    assert "plot: " in out and list(d.glob("*.png"))


def test_single_model_labels_do_not_overlap() -> None:
    # mistral, WizardLM and llama-2 sat within a few pixels of each other in the lower left
    pts = [(40.0, 30.0), (42.0, 31.0), (41.0, 33.0), (300.0, 30.0)]
    widths, height = [60.0, 70.0, 50.0, 60.0], 9.0
    offs = plots.label_offsets(pts, widths, height)
    boxes = [(x + 2, x + 2 + w, y + o, y + o + height) for (x, y), w, o in zip(pts, widths, offs, strict=True)]
    for i in range(len(boxes)):
        for j in range(i):
            a, b = boxes[i], boxes[j]
            assert not (a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]), (i, j)
    assert offs[3] == 2.0  # a label with room stays beside its point


# ------------------------------------------------------------------------------- 5. production
def _small_router() -> Any:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 8)).astype(np.float32)
    return knnroute.KNNRouter(k=5).fit(X, rng.random((30, 2)), rng.random((30, 2)) * 1e-3,
                                       model_names=["a", "b"])


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_router_file_follows_the_umask(tmp_path: Path, mask: int, mode: int) -> None:
    with _umask(mask):
        path = save(_small_router(), tmp_path / "r.knnr")
    assert path.stat().st_mode & 0o777 == mode  # was 0600 whatever the umask


def test_replacing_a_router_file_keeps_its_mode(tmp_path: Path) -> None:
    path = save(_small_router(), tmp_path / "r.knnr")
    path.chmod(0o640)
    with _umask(0o022):
        save(_small_router(), path)
    assert path.stat().st_mode & 0o777 == 0o640


def test_describe_default_names_lambda_and_its_operating_point() -> None:
    assert "highest predicted score, whatever its cost" in describe_default(0.0, None)
    table = BudgetTable(lams=[0.0, 100.0], mean_cost=[0.002, 0.0005], mean_score=[0.8, 0.6],
                        shares=[[0.9, 0.1], [0.2, 0.8]], model_names=["big", "small"], n=147)
    text = describe_default(0.0, table)
    assert "on 147 held-out prompts: mean cost $0.002 per query" in text and "90% to big" in text
    assert "minus 100 x its predicted cost" in describe_default(100.0, table)


def test_serve_logs_readiness_time_and_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from knnroute.service.app import serve

    path = save(_small_router(), tmp_path / "r.knnr")
    from knnroute.service import accept

    monkeypatch.setattr(accept, "run", lambda *a, **kw: None)  # no socket: the log lines are the point
    with caplog.at_level(logging.INFO, logger="knnroute"):
        serve(path, "127.0.0.1", 0, load_embedder=False)
    text = caplog.text
    assert "ready in " in text and " s (router file + embedder warm-up)" in text
    assert "a request without lambda or max_cost gets lambda = 0" in text


def test_model_loading_bar_is_silenced_and_restored() -> None:
    hf_logging = pytest.importorskip("transformers.utils.logging")
    from knnroute.embed.encoders import _quiet_transformers

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    try:
        with _quiet_transformers():
            assert not hf_logging.is_progress_bar_enabled()  # "Loading weights: 100%" stays out of logs
        assert hf_logging.is_progress_bar_enabled()
    finally:
        if not was:
            hf_logging.disable_progress_bar()
