"""Prompt hygiene: decode string-encoded turn lists; strip the prefix every prompt shares.

Why strip: RouterBench's ARC-Challenge and Winogrande prompts open with the same few-shot examples
(1,653 and 1,221 identical characters in the files in ``../shared/data``), and the MiniLM embedder keeps
only the first 256 tokens. Embedding the raw prompt embeds the shared examples, every prompt looks like
every other one and the nearest neighbours carry no information. :class:`PrefixStripper` finds the longest
prefix common to a dataset's prompts (per task group when the dataset has groups), cuts it back to a
blank-line boundary (``"\\n\\n"``), and removes it before embedding. It is switchable
(``embed_dataset(..., strip_prefix=False)``), visible (logged at INFO and recorded in ``ds.meta``) and
persistable (``to_dict`` / ``from_dict``) so a served router strips new prompts the same way.

The dataset keeps the raw prompts (what the models were sent, what costs are estimated from); only the
text handed to the embedder is stripped.
"""

from __future__ import annotations

import ast
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

log = logging.getLogger("knnroute.data")

BOUNDARY = "\n\n"


def decode_turns(value: Any) -> list[str] | None:
    """The turns of a prompt stored as a string-encoded list, or ``None`` if it is not one.

    Accepts a Python/JSON list literal of strings (RouterBench's ``"['turn 1', 'turn 2']"``) or of
    chat messages (``[{"role": "user", "content": ...}, ...]``, user turns kept). Never evaluates code
    (``ast.literal_eval``).
    """
    if isinstance(value, (list, tuple)):
        items: Any = list(value)
    elif isinstance(value, str):
        s = value.strip()
        if not (s.startswith("[") and s.endswith("]")):
            return None
        try:
            items = ast.literal_eval(s)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
        if not isinstance(items, list):
            return None
    else:
        return None
    turns: list[str] = []
    for it in items:
        if isinstance(it, str):
            turns.append(it)
        elif isinstance(it, dict) and isinstance(it.get("content"), str):
            if it.get("role", "user") == "user":
                turns.append(it["content"])
        else:
            return None
    return turns if turns else None


def prompt_text(value: Any, sep: str = BOUNDARY) -> str:
    """The prompt as one string: a turn list is decoded and joined with ``sep``; other text is unchanged.

    Consecutive identical turns are collapsed to one (14 RouterBench ARC-C rows hold the same question
    twice as two turns); the duplicate adds nothing to what the prompt is about.
    """
    turns = decode_turns(value)
    if turns is None:
        return value if isinstance(value, str) else str(value)
    dedup = [t for i, t in enumerate(turns) if i == 0 or t != turns[i - 1]]
    return sep.join(dedup)


def common_prefix(texts: Sequence[str], boundary: str = BOUNDARY) -> str:
    """The longest prefix shared by all ``texts`` that ends right after a ``boundary``.

    The cut never leaves a text empty (or only whitespace): it backs off to an earlier boundary if it
    would. Returns ``""`` for fewer than two texts or when nothing is shared up to a boundary.
    """
    if len(texts) < 2:
        return ""
    lcp = os.path.commonprefix(list(texts))
    cut = lcp.rfind(boundary)
    while cut >= 0:
        end = cut + len(boundary)
        if all(t[end:].strip() for t in texts):
            return lcp[:end]
        cut = lcp.rfind(boundary, 0, cut)
    return ""


class PrefixStripper:
    """Learn the shared prefix of a dataset's prompts (per group) and strip it from any prompt.

    Parameters
    ----------
    boundary : str
        Cut only right after this separator (default a blank line), so a partial example or word is
        never left behind.
    min_chars : int
        Ignore shared prefixes shorter than this. The default (256 characters, about 64 tokens, a quarter
        of MiniLM's window) keeps short shared instructions such as a benchmark's answer-format line: they
        do not crowd the window, and they tell task formats apart.
    min_group_size : int
        Only strip within groups of at least this many prompts: in a handful of prompts a shared opening
        paragraph can be content, not a template.

    Attributes
    ----------
    prefixes_ : dict[str, str]
        Group label (``"*"`` for an ungrouped dataset) -> prefix removed from that group's prompts.
    """

    def __init__(self, boundary: str = BOUNDARY, min_chars: int = 256, min_group_size: int = 20) -> None:
        self.boundary = boundary
        self.min_chars = min_chars
        self.min_group_size = min_group_size

    def fit(self, texts: Sequence[str], groups: Iterable[Any] | None = None) -> PrefixStripper:
        """Find the prefix common to ``texts`` (within each group when ``groups`` is given)."""
        by_group: dict[str, list[str]] = {}
        if groups is None:
            by_group["*"] = list(texts)
        else:
            glist = [str(g) for g in groups]
            if len(glist) != len(texts):
                raise ValueError(f"groups has {len(glist)} entries for {len(texts)} texts")
            for t, g in zip(texts, glist, strict=True):
                by_group.setdefault(g, []).append(t)
        self.prefixes_: dict[str, str] = {}
        for g, ts in by_group.items():
            if len(ts) < max(2, self.min_group_size):
                continue
            p = common_prefix(ts, self.boundary)
            if len(p) >= self.min_chars:
                self.prefixes_[g] = p
        self.group_sizes_ = {g: len(ts) for g, ts in by_group.items()}
        return self

    def transform(self, texts: Sequence[str], groups: Iterable[Any] | None = None) -> list[str]:
        """Strip the learned prefix: the group's own prefix when ``groups`` is given and matches, else the
        longest learned prefix the text starts with. Texts that start with none are returned unchanged."""
        if not hasattr(self, "prefixes_"):
            raise ValueError("PrefixStripper is not fitted: call fit(texts) first")
        if not self.prefixes_:
            return list(texts)
        by_len = sorted(set(self.prefixes_.values()), key=len, reverse=True)
        glist = [str(g) for g in groups] if groups is not None else None
        out: list[str] = []
        for i, t in enumerate(texts):
            p = self.prefixes_.get(glist[i], "") if glist is not None else ""
            if not (p and t.startswith(p)):
                p = next((q for q in by_len if t.startswith(q)), "")
            out.append(t[len(p) :] if p and t[len(p) :].strip() else t)
        return out

    def fit_transform(self, texts: Sequence[str], groups: Iterable[Any] | None = None) -> list[str]:
        glist = None if groups is None else [str(g) for g in groups]
        return self.fit(texts, glist).transform(texts, glist)

    def describe(self) -> str:
        """One line saying what is stripped, for logs and ``RoutingDataset.summary()``."""
        if not getattr(self, "prefixes_", None):
            return "raw prompts (no shared prefix to strip)"
        parts = [
            f"{g if g != '*' else 'all'}: {len(p):,} chars from {self.group_sizes_.get(g, 0):,} prompts"
            for g, p in self.prefixes_.items()
        ]
        return "prompts minus their shared prefix (" + "; ".join(parts) + ")"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (for saved routers and served models)."""
        return {
            "boundary": self.boundary,
            "min_chars": self.min_chars,
            "min_group_size": self.min_group_size,
            "prefixes": dict(getattr(self, "prefixes_", {})),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> PrefixStripper:
        obj = cls(
            boundary=state.get("boundary", BOUNDARY),
            min_chars=int(state.get("min_chars", 256)),
            min_group_size=int(state.get("min_group_size", 20)),
        )
        obj.prefixes_ = dict(state.get("prefixes", {}))
        obj.group_sizes_ = {}
        return obj


def strip_common_prefix(
    texts: Sequence[str], groups: Iterable[Any] | None = None, min_chars: int = 256, min_group_size: int = 20
) -> tuple[list[str], PrefixStripper]:
    """Strip the prefix common to ``texts`` (per group); returns the stripped texts and the fitted stripper.
    """
    glist = None if groups is None else [str(g) for g in groups]
    stripper = PrefixStripper(min_chars=min_chars, min_group_size=min_group_size).fit(texts, glist)
    out = stripper.transform(texts, glist)
    if stripper.prefixes_:
        log.info("stripping shared prompt prefix: %s", stripper.describe())
    return out, stripper
