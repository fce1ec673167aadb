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
   training prompts) and is one edit (deletion, transposition, substitution, insertion of a letter) away from
   some vocabulary words becomes the most frequent of them (ties: alphabetical). At most
   :data:`MAX_CORRECTIONS` words per text are looked up, so a long hostile prompt costs bounded time.

The state (version and vocabulary with counts) is stored in the router file in the embedder facts
(``embedder["text_norm"]``) and applied by :class:`~knnroute.embed.prompt.PromptEncoder` after prefix
stripping, so ``fit``, ``POST /route`` and the gateway (both embed through the router's encoder) see the
same text. A router file without ``text_norm`` (every file saved before) embeds the text as it always did.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["MAX_CORRECTIONS", "MAX_VOCAB", "VERSION", "TextNormaliser"]

VERSION = 1
MAX_VOCAB = 200_000  # words kept (most frequent first); a file with more is refused
MAX_WORD = 20
MAX_CORRECTIONS = 64
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
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


def _basic(text: str) -> str:
    t = unicodedata.normalize("NFKC", text).casefold()
    t = " ".join(_LETTER_DIGIT.sub(" ", _NON_WORD.sub(" ", t)).split())
    return _POLITE.sub("", t)


class TextNormaliser:
    """Normalise prompt text (see the module docstring); ``vocab``: word -> count (training prompts)."""

    def __init__(self, vocab: Mapping[str, int] | None = None, version: int = VERSION) -> None:
        if version != VERSION:
            raise ValueError(f"text_norm version {version!r} is not supported (this knnroute knows {VERSION}): "
                             "upgrade knnroute")
        self.version = version
        self.vocab: dict[str, int] = dict(vocab or {})
        self._cache: dict[str, str] = {}

    @classmethod
    def fit(cls, texts: Iterable[str]) -> TextNormaliser:
        """The vocabulary of ``texts`` (raw prompts, as the embedder would get them), most frequent first."""
        counts = Counter(w for t in texts for w in _basic(t).split(" ") if w.isalpha())
        return cls(dict(counts.most_common(MAX_VOCAB)))

    def _word(self, w: str) -> str:
        v = self.vocab
        if w in v or not 2 <= len(w) <= MAX_WORD or not w.isascii():
            return w
        hit = self._cache.get(w)
        if hit is None:
            cands = [x for x in _edits1(w) if x in v]
            hit = max(cands, key=lambda x: (v[x], [-ord(ch) for ch in x])) if cands else w
            if len(self._cache) < 100_000:
                self._cache[w] = hit
        return hit

    def __call__(self, text: str) -> str:
        """``text`` normalised; never empty (an empty result becomes ``"?"``)."""
        t = _basic(text)
        if self.vocab and t:
            v, n, words = self.vocab, 0, t.split(" ")
            for i, w in enumerate(words):
                if w in v or not w.isalpha():
                    continue
                words[i] = self._word(w)
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
        if not all(isinstance(w, str) and 0 < len(w) <= 256 for w in words):
            raise ValueError("embedder text_norm words must be non-empty strings of at most 256 characters")
        if not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in counts):
            raise ValueError("embedder text_norm counts must be positive integers")
        return cls(dict(zip(words, counts, strict=True)), version)
