"""Text normalisation before embedding: meaning-preserving edits of a prompt route it the same way.

A router's decision should not change when a user lower-cases a prompt, adds a space, drops a comma, starts
with "Please", or makes a one-letter typo (issue 30, item 3; ``experiments/robustness.py`` measures it). With
raw text the static WordLlama embedder changes 3-30% of decisions under each such edit
(``docs/guarantees.md``). :class:`TextNormaliser` maps the edited and the original prompt to the same text:

1. Unicode NFKC, then case folding;
2. every character that is neither a letter nor a digit becomes a space, a space separates letters from
   digits (``image1`` -> ``image 1``), and runs of white space become one space (so punctuation and
   whitespace edits vanish);
3. leading politeness ("please", "could you", "hi", "help me with this", ...) is removed;
4. spelling: after steps 1-3 the text is words separated by single spaces; a word of letters only (2 to
   :data:`MAX_WORD` ASCII letters) that is not in the vocabulary (the letter-only words of the router's
   training prompts) is replaced by a vocabulary word near it, if any. At most :data:`MAX_CORRECTIONS` words
   per text are looked up, so a long hostile prompt costs bounded time.

   * version 1: the vocabulary words one edit (deletion, transposition, substitution, insertion of a letter)
     away; the most frequent of them (ties: alphabetical);
   * version 2 (the default since it exists): a noisy channel. Each candidate word ``v`` scores
     ``log count(v) - BETA * cost``, where ``cost`` adds up the typos that turn ``v`` into the typed word: a
     transposed pair, a dropped letter or a doubled letter cost 1; a letter typed beside its keyboard
     neighbour (extra or in place of the right one) 2; any other extra or substituted letter 3. Candidates
     are one typo away, and, for words of at least :data:`MIN_WORD2` letters (the first
     :data:`MAX_CORRECTIONS2` such look-ups of a text), two typos away (the second one a transposition, a
     dropped or an extra letter). The best score wins (ties: alphabetical).

The state (version and vocabulary with counts) is stored in the router file in the embedder facts
(``embedder["text_norm"]``) and applied by :class:`~knnroute.embed.prompt.PromptEncoder` after prefix
stripping, so ``fit``, ``POST /route`` and the gateway (both embed through the router's encoder) see the
same text. A router file without ``text_norm`` (every file saved before) embeds the text as it always did.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["MAX_CORRECTIONS", "MAX_VOCAB", "VERSION", "TextNormaliser"]

VERSION = 2  # what fit() makes; every version in VERSIONS loads and normalises as it always did
VERSIONS = (1, 2)
MAX_VOCAB = 200_000  # words kept (most frequent first); a file with more is refused
MAX_WORD = 20
MAX_STORED_WORD = 256  # longer words (DNA, protein sequences in LLMRouter) are not kept: the file refuses them
MAX_CORRECTIONS = 64
MAX_CORRECTIONS2 = 16  # version 2: words per text also searched two typos away
MIN_WORD2 = 5
MAX_INDEX = 2_000_000  # version 2: (deleted-letter variant, word) pairs kept for two-typo look-ups
BETA = 4.0  # version 2: one unit of typo cost weighs as a factor e**4 (about 55) in word frequency
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_KEY = {c: (r, i + 0.5 * r) for r, row in enumerate(_ROWS) for i, c in enumerate(row)}
_ADJ = {a: frozenset(b for b in _LETTERS if b != a and abs(_KEY[a][0] - _KEY[b][0]) <= 1
                     and abs(_KEY[a][1] - _KEY[b][1]) <= 1.0) for a in _LETTERS}  # QWERTY neighbours
_NON_WORD = re.compile(r"[\W_]+")  # not a letter or digit (white space included: runs collapse)
_LETTER_DIGIT = re.compile(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])")  # "image1" -> "image 1"
_POLITE = re.compile(
    r"^(?:(?:hi|hello|hey|dear|please|pls|kindly|thanks|thank you|could you|can you|would you|will you|"
    r"help me with this|help me with the following|help me|i need help with|i would like)\b\s*)+"
)


def _edits1(w: str) -> set[str]:
    splits = [(w[:i], w[i:]) for i in range(len(w) + 1)]
    out = {a + b[1:] for a, b in splits if b}
    out |= {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    out |= {a + c + b[1:] for a, b in splits if b for c in _LETTERS}
    out |= {a + c + b for a, b in splits for c in _LETTERS}
    return out


def _typos1(w: str) -> dict[str, int]:
    """Every word one typo away from ``w`` -> the cost of the typo that turns it into ``w`` (version 2)."""
    out: dict[str, int] = {}

    def add(x: str, c: int) -> None:
        if out.get(x, 99) > c:
            out[x] = c

    n = len(w)
    for i, ch in enumerate(w):
        nb = w[i - 1:i] + w[i + 1:i + 2]
        add(w[:i] + w[i + 1:], 1 if ch in nb else 2 if any(ch in _ADJ.get(x, ()) for x in nb) else 3)  # extra
        if i + 1 < n and ch != w[i + 1]:
            add(w[:i] + w[i + 1] + ch + w[i + 2:], 1)  # transposed
        adj = _ADJ.get(ch, frozenset())
        for c in _LETTERS:
            if c != ch:
                add(w[:i] + c + w[i + 1:], 2 if c in adj else 3)  # substituted
    for i in range(n + 1):
        for c in _LETTERS:
            add(w[:i] + c + w[i:], 1)  # dropped
    out.pop(w, None)
    return out


def _basic(text: str) -> str:
    t = unicodedata.normalize("NFKC", text).casefold()
    t = " ".join(_LETTER_DIGIT.sub(" ", _NON_WORD.sub(" ", t)).split())
    return _POLITE.sub("", t)


class TextNormaliser:
    """Normalise prompt text (see the module docstring); ``vocab``: word -> count (training prompts)."""

    def __init__(self, vocab: Mapping[str, int] | None = None, version: int = VERSION) -> None:
        if version not in VERSIONS:
            raise ValueError(f"text_norm version {version!r} is not supported (this knnroute knows "
                             f"{', '.join(map(str, VERSIONS))}): upgrade knnroute")
        self.version = version
        self.vocab: dict[str, int] = dict(vocab or {})
        self._cache: dict[tuple[str, bool], str] = {}
        self._del1: dict[str, list[str]] | None = None

    @classmethod
    def fit(cls, texts: Iterable[str], version: int = VERSION) -> TextNormaliser:
        """The vocabulary of ``texts`` (raw prompts, as the embedder would get them), most frequent first."""
        counts = Counter(w for t in texts for w in _basic(t).split(" ") if w.isalpha() and len(w) <= MAX_STORED_WORD)
        return cls(dict(counts.most_common(MAX_VOCAB)), version)

    def _index(self) -> dict[str, list[str]]:
        """Version 2: each vocabulary word of MIN_WORD2+ letters under each of its one-letter deletions."""
        if self._del1 is None:
            idx: dict[str, list[str]] = {}
            n = 0
            for v in self.vocab:  # most frequent first: a huge vocabulary indexes its frequent words
                if len(v) >= MIN_WORD2:
                    n += len(v)
                    if n > MAX_INDEX:
                        break
                    for i in range(len(v)):
                        idx.setdefault(v[:i] + v[i + 1:], []).append(v)
            self._del1 = idx
        return self._del1

    def _candidates2(self, e1: dict[str, int], add: Any) -> None:
        v, idx = self.vocab, self._index()
        for x, c in e1.items():
            for y in idx.get(x, ()):  # x is y with a letter dropped
                add(y, c + 1)
            for i, ch in enumerate(x):
                y = x[:i] + x[i + 1:]  # x is y with an extra letter
                if y in v:
                    add(y, c + (1 if ch in x[i - 1:i] + x[i + 1:i + 2] else 3))
                if i + 1 < len(x) and ch != x[i + 1]:
                    y = x[:i] + x[i + 1] + ch + x[i + 2:]  # x is y with a transposed pair
                    if y in v:
                        add(y, c + 1)

    def _word(self, w: str, two: bool = False) -> str:
        v = self.vocab
        if w in v or not 2 <= len(w) <= MAX_WORD or not w.isascii():
            return w
        two = two and self.version >= 2 and len(w) >= MIN_WORD2
        hit = self._cache.get((w, two))
        if hit is None:
            if self.version == 1:
                cands = [x for x in _edits1(w) if x in v]
                hit = max(cands, key=lambda x: (v[x], [-ord(ch) for ch in x])) if cands else w
            else:
                best: dict[str, int] = {}

                def add(x: str, c: int) -> None:
                    if best.get(x, 99) > c:
                        best[x] = c

                e1 = _typos1(w)
                for x, c in e1.items():
                    if x in v:
                        add(x, c)
                if two:
                    self._candidates2(e1, add)
                hit = (max(best, key=lambda x: (math.log(v[x]) - BETA * best[x], [-ord(ch) for ch in x]))
                       if best else w)
            if len(self._cache) < 100_000:
                self._cache[(w, two)] = hit
        return hit

    def __call__(self, text: str) -> str:
        """``text`` normalised; never empty (an empty result becomes ``"?"``)."""
        t = _basic(text)
        if self.vocab and t:
            v, n, n2, words = self.vocab, 0, 0, t.split(" ")
            for i, w in enumerate(words):
                if w in v or not w.isalpha():
                    continue
                two = self.version >= 2 and len(w) >= MIN_WORD2 and n2 < MAX_CORRECTIONS2
                n2 += two
                words[i] = self._word(w, two)
                n += 1
                if n >= MAX_CORRECTIONS:
                    break
            t = " ".join(words)
        return t or "?"

    def transform(self, texts: Iterable[str]) -> list[str]:
        return [self(t) for t in texts]

    def sha256(self) -> str:
        h = hashlib.sha256(f"v{self.version}".encode())
        for w, c in sorted(self.vocab.items()):
            h.update(f"\0{w}\1{c}".encode())
        return h.hexdigest()

    def to_dict(self) -> dict[str, Any]:
        words = list(self.vocab)
        return {"version": self.version, "words": words, "counts": [int(self.vocab[w]) for w in words]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TextNormaliser:
        """Validated state (a router file's ``embedder["text_norm"]``); ``ValueError`` says what is wrong."""
        if not isinstance(d, Mapping) or set(d) - {"version", "words", "counts"}:
            raise ValueError("embedder text_norm must be an object with 'version', 'words', 'counts'")
        version, words, counts = d.get("version"), d.get("words", []), d.get("counts", [])
        if isinstance(version, bool) or not isinstance(version, int):
            raise ValueError("embedder text_norm version must be an integer")
        if not isinstance(words, list) or not isinstance(counts, list) or len(words) != len(counts):
            raise ValueError("embedder text_norm words and counts must be lists of the same length")
        if len(words) > MAX_VOCAB:
            raise ValueError(f"embedder text_norm has {len(words)} words (at most {MAX_VOCAB})")
        if not all(isinstance(w, str) and 0 < len(w) <= MAX_STORED_WORD for w in words):
            raise ValueError(f"embedder text_norm words must be non-empty strings of at most {MAX_STORED_WORD} "
                             "characters")
        if not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in counts):
            raise ValueError("embedder text_norm counts must be positive integers")
        return cls(dict(zip(words, counts, strict=True)), version)
