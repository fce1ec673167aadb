"""Multimodal inputs (text + zero or more images) through the embedding layer.

A :class:`MultimodalInput` is a prompt text and a tuple of images (paths, bytes, base64 text; see
:func:`knnroute.embed.image.image_bytes`). It is embedded as two blocks, each cached on disk by its own
embedder (text: SHA-256 of the text; images: SHA-256 of the image bytes):

* ``t`` (d_t,): the text embedder's unit vector (MiniLM by default, 384-d);
* ``i`` (d_i,): the image embedder's unit vector (EfficientNet-Lite0, 1,280-d); several images are
  averaged and re-normalised; an item without images has no image block.

The fused vector with image weight ``w`` in [0, 1] is the normalised concatenation

    x = [sqrt(1 - w) * t, sqrt(w) * i]            (unit norm when both blocks are unit vectors)

so the cosine of two fused vectors is exactly ``(1 - w) * cos(t, t') + w * cos(i, i')``: ``w`` is the
weight of image similarity in the kNN similarity. ``w = 0`` is text-only, ``w = 1`` image-only. An item
without an image is ``[t, 0]`` for every ``w`` (its text alone, unit norm): against an item with an image
its cosine is ``sqrt(1 - w) * cos(t, t')``. ``w`` is a hyperparameter: choose it on validation
(:mod:`knnroute.evaluate.views` does so per split seed), never on test.

:class:`MultimodalEmbedder` wraps the two embedders and ``w`` behind the ordinary :class:`Embedder`
interface (``encode`` takes :class:`MultimodalInput`, dicts ``{"text", "images"}`` or plain strings), so
:class:`~knnroute.production.ProductionRouter` and the service route image + text prompts unchanged. Its
spec ``"multimodal:w=0.2:text=minilm:image=efficientnet-lite0"`` rebuilds it via
:func:`knnroute.embed.get_embedder`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from knnroute.embed.encoders import Embedder

__all__ = [
    "FUSION_WEIGHTS",
    "MultimodalEmbedder",
    "MultimodalInput",
    "as_input",
    "embed_blocks",
    "fuse",
    "parse_spec",
]

#: the image weights searched on validation by the evaluation (endpoints = text-only / image-only)
FUSION_WEIGHTS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


@dataclass(frozen=True)
class MultimodalInput:
    """A prompt: text and zero or more images (paths, bytes, base64 text or ``ImageRef``)."""

    text: str
    images: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"MultimodalInput.text must be a str, got {type(self.text).__name__}")
        imgs = self.images
        if imgs is None:
            imgs = ()
        elif isinstance(imgs, (str, bytes, bytearray, os.PathLike)):
            imgs = (imgs,)
        object.__setattr__(self, "images", tuple(imgs))


def as_input(item: Any) -> MultimodalInput:
    """A :class:`MultimodalInput` from itself, a str (text only) or a mapping ``{"text", "images"|"image"}``."""
    if isinstance(item, MultimodalInput):
        return item
    if isinstance(item, str):
        return MultimodalInput(item)
    if isinstance(item, Mapping):
        unknown = set(item) - {"text", "prompt", "images", "image"}
        if unknown:
            raise ValueError(f"multimodal item has unknown keys {sorted(unknown)} (use text, images)")
        text = item.get("text", item.get("prompt"))
        if text is None:
            raise ValueError("multimodal item needs 'text'")
        imgs: list[Any] = list(item.get("images") or [])
        if item.get("image") is not None:
            imgs.append(item["image"])
        return MultimodalInput(text, tuple(imgs))
    raise TypeError(f"expected MultimodalInput, str or dict, got {type(item).__name__}")


def _check_weight(w: float) -> float:
    w = float(w)
    if not (0.0 <= w <= 1.0) or not math.isfinite(w):
        raise ValueError(f"image weight must be in [0, 1], got {w!r}")
    return w


def fuse(text: np.ndarray, image: np.ndarray, has_image: Any, w: float) -> np.ndarray:
    """Fused vectors ``[sqrt(1-w) t, sqrt(w) i]`` (rows without an image: ``[t, 0]``).

    Parameters
    ----------
    text : (n, d_t) float32 unit rows
    image : (n, d_i) float32, unit rows where ``has_image`` (other rows ignored)
    has_image : (n,) bool
    w : float in [0, 1]

    Returns
    -------
    (n, d_t + d_i) float32, C-contiguous, unit rows (exactly, up to float rounding; re-normalised).
    """
    w = _check_weight(w)
    T = np.asarray(text, dtype=np.float32)
    Im = np.asarray(image, dtype=np.float32)
    h = np.asarray(has_image, dtype=bool).reshape(-1)
    if T.ndim != 2 or Im.ndim != 2 or T.shape[0] != Im.shape[0] or h.shape[0] != T.shape[0]:
        raise ValueError(f"fuse: text {T.shape}, image {Im.shape}, has_image {h.shape} do not line up")
    out = np.zeros((T.shape[0], T.shape[1] + Im.shape[1]), dtype=np.float32)
    a, b = math.sqrt(1.0 - w), math.sqrt(w)
    out[h, : T.shape[1]] = a * T[h]
    out[h, T.shape[1] :] = b * Im[h]
    out[~h, : T.shape[1]] = T[~h]
    norms = np.linalg.norm(out, axis=1)
    if (norms == 0).any():
        i = int(np.flatnonzero(norms == 0)[0])
        raise ValueError(f"fuse: row {i} is all zeros (w={w:g} with an empty text and no image?)")
    return np.ascontiguousarray(out / norms[:, None], dtype=np.float32)


def embed_blocks(
    items: Sequence[Any],
    text_embedder: Any = "minilm",
    image_embedder: Any = "efficientnet-lite0",
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    stats: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Text and image blocks of multimodal items, both cached on disk.

    Returns
    -------
    T : (n, d_t) float32 unit rows
    I : (n, d_i) float32; unit rows where ``has_image``, zeros elsewhere
    has_image : (n,) bool
    """
    from knnroute.embed import embed_texts
    from knnroute.embed.encoders import get_embedder
    from knnroute.embed.image import embed_images

    inputs = [as_input(x) for x in items]
    temb = get_embedder(text_embedder)
    iemb = get_embedder(image_embedder)
    tstats: dict[str, Any] = {}
    istats: dict[str, Any] = {}
    T = embed_texts(
        [x.text for x in inputs], temb, cache=cache, cache_dir=cache_dir, progress=progress, stats=tstats
    )
    flat = [img for x in inputs for img in x.images]
    owner = np.fromiter((i for i, x in enumerate(inputs) for _ in x.images), dtype=np.int64, count=len(flat))
    d_i = iemb.dim
    Im = np.zeros((len(inputs), d_i), dtype=np.float32)
    has = np.zeros(len(inputs), dtype=bool)
    if flat:
        V = embed_images(flat, iemb, cache=cache, cache_dir=cache_dir, progress=progress, stats=istats)
        np.add.at(Im, owner, V)
        has[owner] = True
        norms = np.linalg.norm(Im[has], axis=1)
        if (norms == 0).any():  # images that cancel exactly: practically impossible, but never divide by 0
            raise ValueError("an item's images average to a zero vector")
        Im[has] /= norms[:, None]
    if stats is not None:
        stats.update(text=tstats, image=istats, n=len(inputs), n_with_image=int(has.sum()))
    return T, Im, has


def parse_spec(spec: str) -> dict[str, Any]:
    """``"multimodal:w=0.2:text=minilm:image=efficientnet-lite0"`` -> keyword arguments."""
    if not spec.startswith("multimodal"):
        raise ValueError(f"not a multimodal embedder spec: {spec!r}")
    kw: dict[str, Any] = {}
    for part in spec.split(":")[1:]:
        key, sep, val = part.partition("=")
        if not sep or key not in ("w", "text", "image"):
            raise ValueError(f"multimodal spec {spec!r}: expected w=..., text=..., image=... parts")
        kw["image_weight" if key == "w" else key] = float(val) if key == "w" else val
    return kw


class MultimodalEmbedder(Embedder):
    """Text + image embedder: ``encode(items)`` -> fused unit vectors (see the module docstring).

    Parameters
    ----------
    image_weight : float in [0, 1]
        ``w``: weight of image similarity (choose on validation).
    text : spec
        Text embedder (default ``"minilm"``).
    image : spec
        Image embedder (default ``"efficientnet-lite0"``).
    cache : bool
        Cache the text and image blocks on disk (the fused vectors are recomputed: cheap).

    Items: :class:`MultimodalInput`, a mapping ``{"text": str, "images": [...]}`` or a plain str (no
    image). ``identity`` records both embedders' identities and ``w``; ``spec`` rebuilds it.
    """

    modality = "multimodal"
    cacheable = False  # the blocks are cached by their own embedders; fusing is arithmetic

    def __init__(
        self, image_weight: float = 0.2, text: Any = "minilm", image: Any = "efficientnet-lite0", cache: bool = True
    ) -> None:
        from knnroute.embed.encoders import get_embedder

        self.image_weight = _check_weight(image_weight)
        self.text_embedder = get_embedder(text)
        self.image_embedder = get_embedder(image)
        if getattr(self.image_embedder, "modality", "text") != "image":
            raise ValueError(f"image embedder {self.image_embedder.identity!r} is not an image model")
        self.cache = bool(cache)
        self.identity = (
            f"multimodal(w={self.image_weight:g};text={self.text_embedder.identity};"
            f"image={self.image_embedder.identity})"
        )
        tspec = text if isinstance(text, str) else getattr(self.text_embedder, "spec", None)
        if tspec is None and getattr(self.text_embedder, "name", None) == "all-MiniLM-L6-v2":
            tspec = "minilm"
        ispec = image if isinstance(image, str) else getattr(self.image_embedder, "spec", None)
        self.spec = (
            f"multimodal:w={self.image_weight:g}:text={tspec}:image={ispec}" if tspec and ispec else None
        )

    @property
    def dim(self) -> int:
        return int(self.text_embedder.dim) + int(self.image_embedder.dim)

    def encode(self, items: Sequence[Any], batch_size: int = 64, progress: Any = True) -> np.ndarray:
        items = list(items)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        T, Im, has = embed_blocks(
            items, self.text_embedder, self.image_embedder, cache=self.cache, progress=progress is True
        )
        return fuse(T, Im, has, self.image_weight)

    def _encode(self, items: Sequence[Any], batch_size: int) -> np.ndarray:  # pragma: no cover - unused
        return self.encode(items, batch_size, progress=False)

    def encode_one(self, item: Any) -> np.ndarray:
        return self.encode([item], progress=False)[0]


def _from_spec(spec: str, **kw: Any) -> MultimodalEmbedder:
    return MultimodalEmbedder(**{**parse_spec(spec), **kw})


def _register() -> None:
    from knnroute.embed.encoders import EMBEDDER_PARSERS, register_embedder

    EMBEDDER_PARSERS["multimodal"] = _from_spec
    register_embedder("multimodal", lambda **kw: MultimodalEmbedder(**kw), overwrite=True)


_register()
