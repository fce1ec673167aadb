"""The edits ``experiments/robustness.py`` measures decisions under (issue 30, item 3): the first-measured typo
generator is unchanged, and the non-word typos are real typos (the text changes, no English word is made)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from experiments.robustness import KINDS, NONWORD, edit

TEXTS = ["Tom has four apples and eats one. How many apples are left?",
         "Who slept in the hall after the party, Anna or Bill?",
         "Write a function to add two numbers.", "ok 12", "Is it a cat?"]


def _first_typo(t: str, rng: np.random.Generator, n: int) -> str:  # the generator as first committed
    for _ in range(n):
        words = list(re.finditer(r"[A-Za-z]{3,}", t))
        if not words:
            return t
        s, e = words[int(rng.integers(len(words)))].span()
        i, op = int(rng.integers(s, e - 1)), int(rng.integers(3))
        t = (t[:i] + t[i + 1] + t[i] + t[i + 2:] if op == 0 else t[:i] + t[i + 1:] if op == 1
             else t[:i] + t[i] + t[i:])
    return t


def test_first_measured_typos_are_unchanged() -> None:
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(50):
        for t in TEXTS:
            assert edit(t, "typo1", a) == _first_typo(t, b, 1)
            assert edit(t, "typo2", a) == _first_typo(t, b, 2)


def test_nonword_typos_change_the_text_and_make_no_listed_word() -> None:
    words = frozenset("tom has four for apples and eats one how many any are left who slept sept in the he hall "
                      "all after party anna or bill ill write a function to add two numbers is it cat at".split())
    rng = np.random.default_rng(0)
    for _ in range(100):
        for t in TEXTS:
            for kind in NONWORD:
                out = edit(t, kind, rng, words)
                if t == "ok 12":  # no word of 3+ letters: nothing to misspell
                    assert out == t
                    continue
                assert out != t
                new = set(re.findall(r"[A-Za-z]+", out)) - set(re.findall(r"[A-Za-z]+", t))
                assert new and all(w.lower() not in words for w in new), (t, out)
                assert abs(len(out) - len(t)) <= (1 if kind == "typo1_nonword" else 2)
    # "Is it a cat?": the only 3+ letter word; every typo of it (act, cta, ct, ca, ccat, caat, catt) that is
    # listed (act is not, so it may be chosen; "at" is) is refused
    outs = {edit("Is it a cat?", "typo1_nonword", rng, words | {"act"}) for _ in range(200)}
    assert outs and not any("act" in o or " at?" in o for o in outs)
    with pytest.raises(ValueError, match="needs the English word list"):
        edit("a cat", "typo1_nonword", rng)
    assert set(NONWORD).isdisjoint(KINDS)
