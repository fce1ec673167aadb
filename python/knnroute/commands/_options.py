"""Options every command shares: ``-q/--quiet`` and ``--prices FILE``."""

from __future__ import annotations

import argparse

__all__ = ["add_prices", "add_quiet"]


def add_quiet(p: argparse.ArgumentParser) -> None:
    """``-q``/``--quiet`` (alias ``--no-progress``): no progress bars and no step lines on stderr."""
    p.add_argument(
        "-q", "--quiet", "--no-progress", dest="no_progress", action="store_true",
        help="no progress bars or step lines on stderr (bars are off anyway when stderr is not a terminal)",
    )


def add_prices(p: argparse.ArgumentParser, extra: str = "") -> None:
    """``--prices FILE``: the price table for long-format files that give token counts instead of cost."""
    p.add_argument(
        "--prices", metavar="FILE",
        help="price table for long-format data with input_tokens/output_tokens instead of a cost column: "
        "JSON {model: [USD per 1M input tokens, USD per 1M output tokens]} (or {model: {input_price, "
        "output_price}}) or CSV with columns model, input_price, output_price" + extra,
    )
