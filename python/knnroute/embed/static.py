"""Static token-embedding embedder: WordLlama (``pip install wordllama``, MIT, weights ship in the wheel).

A prompt's vector is the mean of its tokens' rows in a (vocab, d) table, normalised: no transformer, so one
prompt embeds in tens of microseconds instead of milliseconds (see ``docs/static-embedder.md``).

* ``get_embedder("wordllama")`` (alias ``"wordllama-256"``): the ``l2_supercat`` table at d = 256;
  ``"wordllama-128"`` / ``"wordllama-64"`` keep the first 128 / 64 dimensions (the model is trained
  Matryoshka-style, so a prefix is a valid smaller embedding).
* Fully offline: wordllama 0.4.0.post1 looks for its bundled tokenizer in ``wordllama/tokenizer/`` (the
  file is in ``wordllama/tokenizers/``) and then downloads from the Hugging Face hub. We load with
  ``cache_dir`` set to the package's own folder (so its "cache" lookup finds the bundled files) and
  ``disable_download=True``; ``HF_HUB_OFFLINE=1`` is set as well. A missing file is a clear
  ``FileNotFoundError``, never a network call.
* The identity is ``"wordllama-<config>-<d>:sha256=<weights digest>:tok=<tokenizer digest>"``: caches
  and router files never mix two tables or two truncations.
* :meth:`WordLlamaEmbedder.encode_one` is the lean single-prompt path (tokenize one text, gather the
  rows, sum, normalise) used by :meth:`knnroute.production.ProductionRouter.route_prompt`; it equals
  the library's ``embed`` (tested) without its per-call batch set-up.

Importing this module imports only NumPy; ``wordllama`` (and ``tokenizers``, ``safetensors``) load on
first use.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from knnroute.embed.encoders import Embedder, register_embedder

__all__ = ["WordLlamaEmbedder", "wordllama_dir"]

_DIMS = (64, 128, 256)  # the shipped table is 256-d; smaller = its leading dimensions
#: distinct pieces (a ``▁``-run and the characters after it) whose token ids are memoised
WORD_CACHE = 1 << 18
_PIECE = re.compile("\u2581*[^\u2581]+|\u2581+")
#: a prompt is embedded from its first MAX_CHARS characters and at most MAX_TOKENS tokens (a hostile
#: 200,000-emoji prompt is 800k byte-fallback tokens: an 819 MB gather before these caps). Real prompts
#: are far shorter (the longest in ../shared/data: 4,753 characters); a longer one differs from the
#: library's embedding (which has no limit) only there.
MAX_CHARS = 32_768
MAX_TOKENS = 8_192
_POOL_CHUNK = 4096  # rows gathered at once when pooling (bounds the temporary to 4 MB at d = 256)


def wordllama_dir() -> Path:
    """The installed ``wordllama`` package folder (holds ``weights/`` and ``tokenizers/``)."""
    import importlib.util

    spec = importlib.util.find_spec("wordllama")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the static embedder needs the 'wordllama' package: pip install '.[static]' in the knnroute checkout"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _import_wordllama() -> Any:
    """``import wordllama`` without its side effects on the process.

    wordllama.inference calls ``logging.basicConfig(level=INFO)`` at import, which would make every
    library's INFO logs print; we restore the root logger's handlers and level afterwards.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"  # defensive: nothing below may reach a hub
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        import wordllama
    except ImportError as e:
        raise ImportError(
            "the static embedder needs the 'wordllama' package: pip install '.[static]' in the knnroute checkout"
        ) from e
    finally:
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)
    return wordllama


class WordLlamaEmbedder(Embedder):
    """WordLlama static embeddings, loaded offline from the installed package.

    Parameters
    ----------
    dim : int
        256 (default, the shipped table), 128 or 64 (leading dimensions of the same table).
    config : str
        WordLlama configuration whose files ship in the package (``"l2_supercat"``).
    """

    def __init__(self, dim: int = 256, config: str = "l2_supercat") -> None:
        dim = int(dim)
        if dim not in _DIMS:
            raise ValueError(f"WordLlama dim must be one of {_DIMS}, got {dim}")
        self.config = config
        self._d = dim
        self.spec = "wordllama" if dim == 256 else f"wordllama-{dim}"
        folder = wordllama_dir()
        self.weights_path = folder / "weights" / f"{config}_256.safetensors"
        self.tokenizer_path = folder / "tokenizers" / f"{config}_tokenizer_config.json"
        for f, what in ((self.weights_path, "weights"), (self.tokenizer_path, "tokenizer")):
            if not f.is_file():
                raise FileNotFoundError(
                    f"{f}: the wordllama package has no bundled {what} for {config!r} "
                    "(the static embedder never downloads; reinstall wordllama)"
                )
        self.identity = (
            f"wordllama-{config}-{dim}:sha256={_file_digest(self.weights_path)}"
            f":tok={_file_digest(self.tokenizer_path)}"
        )
        self._model: Any = None
        self._table: np.ndarray | None = None
        self._tok: Any = None
        self._bpe: Any = None
        self._words: dict[str, list[int]] = {}
        self._empty: np.ndarray | None = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self._d

    def _load(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    wl = _import_wordllama()
                    model = wl.WordLlama.load(
                        self.config,
                        cache_dir=wordllama_dir(),
                        dim=256,
                        trunc_dim=None if self._d == 256 else self._d,
                        disable_download=True,
                    )
                    self._table = np.ascontiguousarray(model.embedding, dtype=np.float32)
                    self._check_tokenizer(model.tokenizer)
                    self._bpe = model.tokenizer.model
                    self._tok = model.tokenizer
                    self._model = model
        return self._model

    def _check_tokenizer(self, tok: Any) -> None:
        """Refuse a tokenizer the piece-wise path would not reproduce exactly (see :meth:`token_ids`)."""
        import json

        cfg = json.loads(tok.to_str())
        norm = cfg.get("normalizer") or {}
        expected = [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
        ]
        ok = (
            norm.get("type") == "Sequence"
            and norm.get("normalizers") == expected
            and cfg.get("pre_tokenizer") is None
            and (cfg.get("model") or {}).get("type") == "BPE"
            and not any("\u2581" in t.lstrip("\u2581") for t in tok.get_vocab())
        )
        if not ok:
            raise ValueError(
                f"{self.tokenizer_path}: unexpected WordLlama tokenizer layout (normalizer, pre-tokenizer or "
                "vocabulary differ from wordllama 0.4's l2_supercat); this version is not supported"
            )

    # ------------------------------------------------------------------ tokenization (exact, cached)
    def token_ids(self, text: str) -> list[int]:
        """The library's token ids of ``text`` (``add_special_tokens=False``), through a word cache.

        The tokenizer is a byte-fallback BPE with no pre-tokenizer: its normalizer prepends ``▁`` and
        turns spaces into ``▁``, then BPE runs over the whole string as one word, which costs about
        0.5 µs per character and caches nothing. No vocabulary entry has a ``▁`` after a non-``▁``
        character (checked at load), so no merge crosses the start of a ``▁``-run that follows a
        character: BPE on those pieces separately gives the same ids. We split there and memoise each
        piece's ids (up to ``WORD_CACHE`` pieces), so repeated words cost a dict lookup.

        Bounded: only the first :data:`MAX_CHARS` characters are tokenised and at most :data:`MAX_TOKENS`
        ids are returned, so one request's CPU and memory are capped whatever its text.
        """
        if self._tok is None:
            self._load()
        if not text:
            return []
        cache = self._words
        ids: list[int] = []
        for w in _PIECE.findall("\u2581" + text[:MAX_CHARS].replace(" ", "\u2581")):
            if len(ids) >= MAX_TOKENS:
                break
            got = cache.get(w)
            if got is None:
                got = [t.id for t in self._bpe.tokenize(w)]
                if len(cache) < WORD_CACHE:
                    cache[w] = got
            ids.extend(got)
        return ids[:MAX_TOKENS]

    def _pool(self, ids: list[int]) -> np.ndarray:
        """Mean-pool direction of the rows of ``ids`` (unnormalised sum; empty -> the fixed empty vector)."""
        if not ids:
            return self._empty_vector().copy()
        idx = np.asarray(ids, dtype=np.intp)
        table = self._table
        assert table is not None
        if len(idx) <= _POOL_CHUNK:
            return table[idx].sum(axis=0)
        return sum((table[idx[s : s + _POOL_CHUNK]].sum(axis=0) for s in range(0, len(idx), _POOL_CHUNK)),
                   np.zeros(table.shape[1], dtype=table.dtype))

    def _encode(self, items: Sequence[Any], batch_size: int) -> np.ndarray:
        self._load()
        out = np.empty((len(items), self._d), dtype=np.float32)
        for i, t in enumerate(items):
            out[i] = self._pool(self.token_ids(t))
        return out  # encode() normalises the rows

    def _empty_vector(self) -> np.ndarray:
        """Texts with no tokens (empty or ``""``) would pool to a zero vector, which has no cosine.

        They get a fixed direction instead: the normalised mean of the whole table, so an empty prompt
        still routes deterministically rather than failing.
        """
        self._load()
        v = self._empty
        if v is None:
            v = self._table.mean(axis=0, dtype=np.float64).astype(np.float32)  # type: ignore[union-attr]
            v /= np.linalg.norm(v)
            self._empty = v
        return v

    def encode_one(self, text: str) -> np.ndarray:
        """One prompt -> (d,) float32 unit vector: cached tokenization, gather, sum, normalise.

        The same vector (to float rounding) as ``encode([text])[0]`` and as the library's
        ``WordLlamaInference.embed(text, norm=True)`` (tested), without the batch set-up.
        """
        if not isinstance(text, str):
            raise TypeError(f"expected str, got {type(text).__name__}")
        v = self._pool(self.token_ids(text))
        n = float(np.sqrt(v @ v))
        if not (n > 0.0 and np.isfinite(n)):  # tokens whose rows cancel out: no direction of their own
            return self._empty_vector().copy()
        v /= np.float32(n)
        return v


def _make_wordllama(dim: int = 256, **kw: Any) -> Embedder:
    return WordLlamaEmbedder(dim=dim, **kw)  # wordllama itself loads on first encode


register_embedder("wordllama", _make_wordllama)
for _d in (256, 128, 64):
    register_embedder(f"wordllama-{_d}", lambda _d=_d, **kw: _make_wordllama(dim=_d, **kw))
