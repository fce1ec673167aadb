"""The ``knnroute`` command line (also ``python -m knnroute``).

Subcommands are registered in :data:`COMMANDS`: each names a module exposing
``configure(parser: argparse.ArgumentParser) -> None`` and ``run(args: argparse.Namespace) -> int``. The
module is imported when the parser is built, so it must import its heavy dependencies inside ``run``.
Every subcommand's module lives in :mod:`knnroute.commands`; adding one is one line here plus that
module.

User errors never end in a traceback: :func:`main` turns a ``ValueError`` (bad data, bad option; a
``RouterFileError``, a ``UnicodeDecodeError``), a missing file, a missing extra, input nested too deeply
(``RecursionError``) or too large for memory (``MemoryError``) into one line on stderr,
``knnroute <command>: error: ...``, and exit status 2. Loaders name the file and the row in their
messages. Commands that read ``--data`` also take ``--allow-pickle``: without it a pickle is refused
unread (unpickling runs code).
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import import_module

__all__ = ["COMMANDS", "Command", "build_parser", "main", "plain"]


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one-line help, and the module with ``configure`` and ``run``."""

    name: str
    help: str
    module: str


COMMANDS: list[Command] = [
    Command(
        "eval",
        "evaluate routers on benchmarks: AUC tables, gain over the best single model, JSON and plots",
        "knnroute.commands.eval",
    ),
    Command("fit", "embed a dataset, fit the tuned kNN router and save it to a router file",
            "knnroute.commands.fit"),
    Command(
        "serve", "serve a router file over HTTP (POST /route, /metrics, /health)", "knnroute.commands.serve"
    ),
    Command("convert", "convert a trusted RouterBench pickle to Parquet once (pickles run code when read)",
            "knnroute.commands.convert"),
    Command("gateway", "OpenAI-compatible gateway: route chat completions to upstream models, learn from "
            "feedback", "knnroute.commands.gateway"),
    Command("feedback", "gateway feedback: revert one key's or a time window's (store and router file)",
            "knnroute.commands.feedback"),
    Command("route-batch", "route prompts or embeddings from Parquet/CSV/JSONL files to Parquet decisions "
            "(in process or on Ray Data)", "knnroute.commands.route_batch"),
]


def plain(doc: str) -> str:
    """A docstring as ``--help`` shows it: reST roles and literals as plain text (``:mod:`a.b``` -> a.b,
    ``:func:`~a.b``` -> b, double backquotes dropped), paragraphs kept."""
    text = re.sub(r":[a-z]+:`~[\w.]*?\.?(\w+)`", r"\1", inspect.cleandoc(doc))
    text = re.sub(r":[a-z]+:`([^`]+)`", r"\1", text)
    return text.replace("``", "").replace("::", ":")


def build_parser(commands: Sequence[Command] | None = None) -> argparse.ArgumentParser:
    """The top-level parser with one subparser per registered command."""
    from knnroute import __version__

    parser = argparse.ArgumentParser(
        prog="knnroute",
        description="Exact kNN LLM routing: evaluate, fit and serve routers.",
    )
    parser.add_argument("--version", action="version", version=f"knnroute {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS if commands is None else commands:
        mod = import_module(cmd.module)
        p = sub.add_parser(
            cmd.name, help=cmd.help, description=plain(mod.__doc__ or cmd.help),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.configure(p)
        if any(a.dest == "data" for a in p._actions) and not any(a.dest == "allow_pickle" for a in p._actions):
            p.add_argument("--allow-pickle", action="store_true",
                           help="allow --data to name a pickle (.pkl). WARNING: unpickling runs any code the "
                           "file carries: only for files you trust; prefer 'knnroute convert' to Parquet")
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the chosen subcommand; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 2
    from knnroute.data.tables import allow_pickle

    def fail(msg: str) -> int:
        line = " ".join(str(msg).split())
        print(f"knnroute {args.command}: error: {line[:2000]}", file=sys.stderr)
        return 2

    try:
        with allow_pickle(bool(getattr(args, "allow_pickle", False))):
            return int(run(args))
    except KeyboardInterrupt:
        print(f"knnroute {args.command}: interrupted", file=sys.stderr)
        return 130
    except RecursionError:
        return fail("input nested too deeply (a JSON value or a data file): RecursionError")
    except MemoryError:
        return fail("out of memory: an input (a line, a prompt, a file) is too large for this machine")
    except FileNotFoundError as e:
        return fail(str(e) if e.filename is None else f"{e.filename}: no such file or folder")
    except (ValueError, ImportError, OSError) as e:
        return fail(str(e) or type(e).__name__)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
