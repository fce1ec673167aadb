"""Progress bars and step lines for long steps (embedding, fitting, the evaluation grid).

One place decides when a bar is shown: only when stderr is a terminal (tqdm's ``disable=None``), never
with ``progress=False`` (the commands' ``--quiet``/``-q``). Bars refresh at most twice a second and show
the count, the rate and the time left. Step lines (:func:`step`) go to stderr unless quiet, so a log
shows which step a slow run is in.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["bar", "step"]

# Bars refresh at most this often (seconds): enough to look alive, cheap for tight loops.
MIN_INTERVAL = 0.5


def bar(total: int, desc: str, unit: str = "item", *, enabled: bool = True, leave: bool = False) -> Any:
    """A tqdm bar over ``total`` units, or None (``enabled`` False, tqdm missing, or stderr not a TTY).

    The bar is also None when stderr is not a terminal, so callers can test ``if b is not None`` and
    logs stay clean.
    """
    if not enabled or not _is_tty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress is cosmetic; run without it
        return None
    # A pseudo-terminal that reports a 0 x 0 size (script(1), some container runtimes) gets no bar at all
    # from tqdm's own sizing: give it a fixed one instead.
    sized = _columns() > 0
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=sized, ncols=None if sized else 100,
                nrows=None if sized else 40, leave=leave, mininterval=MIN_INTERVAL, smoothing=0.1,
                file=sys.stderr)


def step(message: str, *, enabled: bool = True) -> None:
    """One status line on stderr (``enabled`` False: nothing), e.g. ``fit: tuning k on 147 prompts``."""
    if enabled:
        print(message, file=sys.stderr, flush=True)


def _is_tty() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def _columns() -> int:
    """Width of the terminal on stderr (0 when it reports none or cannot be asked)."""
    import os

    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 0

