"""The ``knnroute`` command line (also ``python -m knnroute``).

Subcommands are registered in :data:`COMMANDS`: each names a module exposing
``configure(parser: argparse.ArgumentParser) -> None`` and ``run(args: argparse.Namespace) -> int``. The
module is imported when the parser is built, so it must import its heavy dependencies inside ``run``.
Every subcommand's module lives in :mod:`knnroute.commands`; adding one is one line here plus that
module.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import import_module

__all__ = ["COMMANDS", "Command", "build_parser", "main"]


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
    Command("gateway", "OpenAI-compatible gateway: route chat completions to upstream models, learn from "
            "feedback", "knnroute.commands.gateway"),
    Command("route-batch", "route prompts or embeddings from Parquet/CSV/JSONL files to Parquet decisions "
            "(in process or on Ray Data)", "knnroute.commands.route_batch"),
]


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
            cmd.name, help=cmd.help, description=(mod.__doc__ or cmd.help).strip().split("\n\n")[0]
        )
        mod.configure(p)
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
    return int(run(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
