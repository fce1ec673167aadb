"""On-disk embedding cache, keyed by embedder identity and the SHA-256 of the exact text embedded.

Layout under the cache root (``$KNNROUTE_CACHE``, else ``~/.cache/knnroute/embeddings``)::

    <slug>-<sha256(identity)[:16]>/
        IDENTITY                  the full embedder identity string (checked on open)
        <shard>.npy               (rows, d) float32 vectors, unit rows
        <shard>.keys              rows x 32 bytes: SHA-256 of each embedded text, same order

A shard is written whenever a batch of new vectors is flushed: the vectors file first, then the keys
file, each to a temporary name and ``os.replace``-d into place, so a reader never sees a partial shard
(a shard exists for readers once its ``.keys`` file does). Shards are never modified, so any number of
processes can read while others append; two writers that embed the same text both write it, and the
lookup takes either (they are the same vector up to float rounding of the same model).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger("knnroute.embed")

KEY_BYTES = 32


def default_cache_dir() -> Path:
    """``$KNNROUTE_CACHE`` if set, else ``~/.cache/knnroute/embeddings``."""
    env = os.environ.get("KNNROUTE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "knnroute" / "embeddings"


def text_key(text: str) -> bytes:
    """SHA-256 digest (32 bytes) of the UTF-8 text: the cache key of one embedded text."""
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).digest()


def unique_keys(keys: Sequence[bytes]) -> tuple[list[bytes], list[int], np.ndarray]:
    """Deduplicate cache keys: (unique keys in first-seen order, the first position of each, and for
    every input its slot in the unique list), so each distinct text or image is encoded once."""
    pos: dict[bytes, int] = {}
    ukeys: list[bytes] = []
    first: list[int] = []
    inverse = np.empty(len(keys), dtype=np.int64)
    for i, k in enumerate(keys):
        j = pos.get(k)
        if j is None:
            j = pos[k] = len(ukeys)
            ukeys.append(k)
            first.append(i)
        inverse[i] = j
    return ukeys, first, inverse


def _slug(identity: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", identity)[:48].strip("_") or "embedder"


class EmbeddingCache:
    """The cached vectors of one embedder.

    Parameters
    ----------
    identity : str
        The embedder's identity (``Embedder.identity``): vectors are only ever shared between identical
        identities.
    root : path, optional
        Cache root; default :func:`default_cache_dir`.
    """

    def __init__(self, identity: str, root: str | os.PathLike | None = None) -> None:
        if not identity:
            raise ValueError("an embedding cache needs a non-empty embedder identity")
        self.identity = identity
        self.root = Path(root) if root is not None else default_cache_dir()
        digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]
        self.dir = self.root / f"{_slug(identity)}-{digest}"
        self._index: dict[bytes, tuple[str, int]] = {}
        self._loaded: set[str] = set()
        self._dim: int | None = None

    # ---------------------------------------------------------------- reading
    def _refresh(self) -> None:
        """Index shards that appeared since the last look (other processes may have added some)."""
        if not self.dir.is_dir():
            return
        ident_file = self.dir / "IDENTITY"
        if ident_file.is_file():
            stored = ident_file.read_text(encoding="utf-8")
            if stored != self.identity:
                raise ValueError(
                    f"{self.dir}: cache folder belongs to embedder {stored!r}, not {self.identity!r} "
                    "(hash-prefix collision); delete the folder"
                )
        for kf in sorted(self.dir.glob("*.keys")):
            shard = kf.name[: -len(".keys")]
            if shard in self._loaded:
                continue
            raw = kf.read_bytes()
            if len(raw) % KEY_BYTES:
                log.warning("ignoring corrupt cache shard %s (key file length)", kf)
                self._loaded.add(shard)
                continue
            vec_file = self.dir / f"{shard}.npy"
            try:
                vecs = np.load(vec_file, mmap_mode="r")
            except (OSError, ValueError):
                log.warning("ignoring cache shard %s (vectors unreadable)", vec_file)
                self._loaded.add(shard)
                continue
            n = len(raw) // KEY_BYTES
            if vecs.ndim != 2 or vecs.shape[0] != n or (self._dim is not None and vecs.shape[1] != self._dim):
                log.warning("ignoring cache shard %s (shape %s for %d keys)", vec_file, vecs.shape, n)
                self._loaded.add(shard)
                continue
            self._dim = int(vecs.shape[1])
            for r in range(n):
                self._index[raw[r * KEY_BYTES : (r + 1) * KEY_BYTES]] = (shard, r)
            self._loaded.add(shard)

    def __len__(self) -> int:
        self._refresh()
        return len(self._index)

    def get(self, keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray | None]:
        """Look up keys.

        Returns
        -------
        found : (n,) bool
        vectors : (n_found, d) float32 in the order of the found keys, or None when nothing was found.
        """
        self._refresh()
        found = np.fromiter((k in self._index for k in keys), dtype=bool, count=len(keys))
        if not found.any():
            return found, None
        by_shard: dict[str, list[tuple[int, int]]] = {}
        pos = 0
        for k, f in zip(keys, found, strict=False):
            if f:
                shard, r = self._index[k]
                by_shard.setdefault(shard, []).append((pos, r))
                pos += 1
        out = np.empty((pos, self._dim or 0), dtype=np.float32)
        for shard, pairs in by_shard.items():
            vecs = np.load(self.dir / f"{shard}.npy", mmap_mode="r")
            dst = np.fromiter((p for p, _ in pairs), dtype=np.int64, count=len(pairs))
            src = np.fromiter((r for _, r in pairs), dtype=np.int64, count=len(pairs))
            order = np.argsort(src, kind="stable")  # read the memory map in file order
            out[dst[order]] = vecs[src[order]]
        return found, out

    # ---------------------------------------------------------------- writing
    def put(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Append one shard of ``vectors`` ((n, d) float32) under ``keys`` (n SHA-256 digests)."""
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[0] != len(keys):
            raise ValueError(f"put: {len(keys)} keys for vectors of shape {vecs.shape}")
        if not len(keys):
            return
        if any(len(k) != KEY_BYTES for k in keys):
            raise ValueError("put: keys must be 32-byte SHA-256 digests (use text_key)")
        self._refresh()
        if self._dim is not None and vecs.shape[1] != self._dim:
            raise ValueError(f"put: vectors have d={vecs.shape[1]}, the cache holds d={self._dim}")
        self.dir.mkdir(parents=True, exist_ok=True)
        ident_file = self.dir / "IDENTITY"
        if not ident_file.exists():
            self._atomic_write(ident_file, self.identity.encode("utf-8"))
        shard = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        tmp = self.dir / f".tmp-{shard}.npy"
        with open(tmp, "wb") as fh:
            np.save(fh, vecs)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.dir / f"{shard}.npy")
        self._atomic_write(self.dir / f"{shard}.keys", b"".join(keys))
        self._dim = int(vecs.shape[1])
        for r, k in enumerate(keys):
            self._index[k] = (shard, r)
        self._loaded.add(shard)

    @staticmethod
    def _atomic_write(path: Path, data: bytes) -> None:
        tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{path.name}")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def n_shards(self) -> int:
        return len(list(self.dir.glob("*.keys"))) if self.dir.is_dir() else 0
