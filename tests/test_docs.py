"""The documentation's commands work: a wrong flag or a moved script in a doc fails CI.

Every ``knnroute ...`` command line in a fenced shell block of the README and the markdown under ``docs/``,
``bench/``, ``experiments/`` and ``python/`` is parsed by the real argument parser
(:func:`knnroute.cli.build_parser`) without being run: the subcommand, every flag, the required options and
the values' types. Inline code spans (``knnroute fit --shrinkage 10`` in a sentence, synopsis lines with
``[--k K]``) are fragments: each of their flags must be an option of the subcommand. ``python -m <module>``, ``python
<file>.py`` and ``bash <file>.sh`` lines must name a module or file that exists. The cheap commands run for
real: ``knnroute --help``, ``--version``, every documented subcommand's ``--help`` (through the installed
entry point), and the README's Python example.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from knnroute.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted(
    [ROOT / "README.md"]
    + [p for d in ("docs", "bench", "experiments", "python") for p in (ROOT / d).rglob("*.md")]
)
SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}


@dataclass(frozen=True)
class DocCommand:
    """One command line of a doc: where it is and its words (comments, prompts and env prefixes removed)."""

    where: str
    words: tuple[str, ...]
    fragment: bool  # an inline code span (a mention or a synopsis), not a whole runnable command

    def __str__(self) -> str:
        return f"{self.where}: {' '.join(self.words)}"


def _blocks(text: str) -> list[tuple[int, str, str]]:
    """(first line number, language, body) of every fenced code block."""
    out = []
    for m in re.finditer(r"^```([\w-]*)[^\n]*\n(.*?)^```", text, flags=re.M | re.S):
        out.append((text.count("\n", 0, m.start()) + 2, m.group(1).lower(), m.group(2)))
    return out


def _segments(line: str) -> list[list[str]]:
    """A shell line split into simple commands at ``&&``, ``||``, ``;`` and ``|`` (comments dropped)."""
    try:
        lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lex.whitespace_split = True
        lex.commenters = "#"
        tokens = list(lex)
    except ValueError:  # an unbalanced quote: not a command we can read
        return []
    segs: list[list[str]] = [[]]
    for t in tokens:
        if t and set(t) <= set(";&|"):
            segs.append([])
        else:
            segs[-1].append(t)
    return [s for s in segs if s]


def _command_words(seg: list[str]) -> list[str]:
    """Drop ``VAR=value`` prefixes, ``$``/``nice``/``time`` wrappers; ``python -m knnroute`` -> ``knnroute``."""
    i = 0
    while i < len(seg) and (re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", seg[i]) or seg[i] in ("$", "nice", "time")):
        i += 1
    words = seg[i:]
    if len(words) >= 3 and re.fullmatch(r"python3?", words[0]) and words[1:3] == ["-m", "knnroute"]:
        words = ["knnroute", *words[3:]]
    return words


def doc_commands() -> list[DocCommand]:
    """Every command line in the docs' shell blocks and in inline code spans that start with a command."""
    found: list[DocCommand] = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT).as_posix()
        for first, lang, body in _blocks(text):
            if lang not in SHELL_LANGS:
                continue
            body = body.replace("\\\n", " ")
            for k, line in enumerate(body.splitlines()):
                for seg in _segments(line):
                    found.append(DocCommand(f"{rel}:{first + k}", tuple(_command_words(seg)), False))
        # code blocks blanked out line for line, so span positions keep their line numbers
        prose = re.sub(r"^```.*?^```", lambda b: "\n" * b.group(0).count("\n"), text, flags=re.M | re.S)
        for m in re.finditer(r"`([^`\n]+)`", prose):
            span = m.group(1).strip()
            if not re.match(r"(knnroute\s+[a-z-]+|python3? -m \w|bash \S+\.sh)", span):
                continue
            line = prose.count("\n", 0, m.start()) + 1
            synopsis = bool(re.search(r"\[|\]|\||\.\.\.|…", span))
            for seg in _segments(span) if not synopsis else [span.split()]:
                found.append(DocCommand(f"{rel}:{line}", tuple(_command_words(seg)), True))
    return found


COMMANDS_IN_DOCS = doc_commands()
KNNROUTE_LINES = [c for c in COMMANDS_IN_DOCS if c.words and c.words[0] == "knnroute"]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_the_docs_have_commands_to_check() -> None:
    """The extraction finds the README's commands (a regex that matched nothing would pass every test)."""
    readme = {" ".join(c.words) for c in KNNROUTE_LINES if c.where.startswith("README.md")}
    assert "knnroute eval" in readme
    assert "knnroute fit --data routerbench --out rb.knnr" in readme
    assert len(KNNROUTE_LINES) > 40
    assert {c.words[1] for c in KNNROUTE_LINES if len(c.words) > 1} >= {"eval", "fit", "serve", "gateway"}


@pytest.mark.parametrize("cmd", KNNROUTE_LINES, ids=str)
def test_documented_knnroute_command_parses(cmd: DocCommand) -> None:
    """The real parser accepts the line: the subcommand exists, every flag exists, values convert."""
    parser = build_parser()
    subs = _subparsers(parser)
    args = list(cmd.words[1:])
    if cmd.fragment:
        assert args and args[0] in subs, f"{cmd}: unknown subcommand"
        known = {s for a in subs[args[0]]._actions for s in a.option_strings}
        parts = [p.strip("[]()") for w in args for p in w.split("|")]
        flags = {p.split("=")[0] for p in parts if re.match(r"--?[A-Za-z]", p)}
        unknown = sorted(f for f in flags if f not in known)
        assert not unknown, f"{cmd}: {args[0]} has no option(s) {unknown}"
        return
    err = io.StringIO()
    code: int | str | None = 0
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(args)
    except SystemExit as e:  # --help / --version exit 0 after printing; anything else is a parse error
        code = e.code
    assert code == 0, f"{cmd}: {err.getvalue().strip().splitlines()[-1]}"


OTHER_LINES = [c for c in COMMANDS_IN_DOCS if c.words and c.words[0] in ("python", "python3", "bash")]


@pytest.mark.parametrize("cmd", OTHER_LINES, ids=str)
def test_documented_scripts_exist(cmd: DocCommand) -> None:
    """``python -m mod`` names an importable module; ``python file.py`` / ``bash file.sh`` an existing file."""
    words = list(cmd.words)
    if words[0].startswith("python") and len(words) >= 3 and words[1] == "-m":
        mod = words[2]
        if mod in ("pip", "pytest", "venv", "knnroute"):
            return
        top = mod.split(".")[0]
        if (ROOT / top).is_dir() and not (ROOT / top / "__init__.py").exists():
            pytest.fail(f"{cmd}: {top}/ is not a package")
        if (ROOT / top).is_dir():
            assert (ROOT / Path(*mod.split("."))).with_suffix(".py").is_file(), f"{cmd}: no module {mod}"
        else:
            assert importlib.util.find_spec(mod) is not None, f"{cmd}: no module {mod}"
    elif len(words) >= 2 and words[1].endswith((".py", ".sh")):
        assert (ROOT / words[1]).is_file(), f"{cmd}: no file {words[1]}"


def _knnroute_exe() -> list[str]:
    exe = shutil.which("knnroute")
    return [exe] if exe else [sys.executable, "-m", "knnroute"]


def test_help_of_every_documented_subcommand_runs() -> None:
    """``knnroute --help``, ``--version`` and ``<sub> --help`` for every subcommand the docs use, for real."""
    documented = {c.words[1] for c in KNNROUTE_LINES if len(c.words) > 1 and not c.words[1].startswith("-")}
    assert documented <= {c.name for c in COMMANDS}, f"docs use unknown subcommands {documented}"
    for argv in (["--help"], ["--version"], *([s, "--help"] for s in sorted(documented))):
        r = subprocess.run([*_knnroute_exe(), *argv], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"knnroute {' '.join(argv)}: {r.stderr.strip()[-500:]}"
        assert "usage: knnroute" in r.stdout or r.stdout.startswith("knnroute "), argv


def test_fit_help_documents_the_options_the_docs_use() -> None:
    """The fit options the README and docs/service.md lean on are in ``knnroute fit --help``."""
    r = subprocess.run([*_knnroute_exe(), "fit", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    for flag in ("--shrinkage", "--json", "--default-lambda", "--no-lexical", "--k"):
        assert flag in r.stdout


def test_readme_python_example_runs() -> None:
    """The README's first Python block (KNNRouter on random data) runs as written."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    body = next(b for _, lang, b in _blocks(text) if lang == "python")
    assert "KNNRouter" in body
    ns: dict[str, object] = {}
    exec(compile(body, "README.md (Use it)", "exec"), ns)  # our own README
    assert getattr(ns["s_hat"], "shape", None) == (4, 3)


def test_relative_links_resolve_inside_the_repository() -> None:
    """Every relative markdown link (``[text](path)``, images too) names a file or folder of the checkout: no
    link to a file a user does not have (the README once linked ``../shared/PAPER.md``)."""
    bad = []
    for path in DOCS:
        text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL or an anchor
            dest = (path.parent / target.split("#")[0]).resolve()
            if not dest.exists() or ROOT not in (dest, *dest.parents):
                bad.append(f"{path.relative_to(ROOT)}: {target}")
    assert not bad, bad
