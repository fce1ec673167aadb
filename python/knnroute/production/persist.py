"""The router file format: one versioned, checksummed, memory-mappable file of plain state.

This module reads and writes *plain state* (arrays and a JSON metadata dict); it knows nothing of the
router classes. :mod:`knnroute.production.files` turns a
:class:`~knnroute.production.router.ProductionRouter` into that state and back (``save`` / ``load``).

File layout (all integers little-endian)::

    offset  size  field
    0       8     magic b"KNNROUTE"
    8       4     u32 format version (FORMAT_VERSION)
    12      4     u32 header length H (bytes of UTF-8 JSON)
    16      32    SHA-256 of the JSON header bytes
    48      H     JSON metadata (see below)
    ...           zero padding to a multiple of 64
    P       ...   array payload: each array C-contiguous, little-endian, starting on a 64-byte boundary

The JSON metadata holds ``dim``, ``n``, ``n_models``, ``precision`` (storage dtype of the embeddings section:
``"f32"``, ``"f16"`` or ``"bf16"``), ``model_names``, ``prices``, the kNN settings (``k``, ``weighting``,
``temperature``, ``shrinkage``, optionally ``half_life``), optionally ``row_times`` (``[row, time]`` pairs of
rows whose time is not 0: feedback rows, for the decay), the embedder (identity, spec, prefix-stripping
state), prompt ``ids``, the budget table, the fallback policy, the default lambda, and ``arrays``: for each of
``embeddings`` (n, d; unit rows), ``scores`` (n, M; float32, NaN = missing) and ``costs`` (n, M; float32) its
``dtype``, absolute ``offset`` and ``shape`` (a router with the lexical hybrid embedder adds
``lexical_components`` (k, V) and ``lexical_idf`` (1, V), both ``<f4``, described by the embedder's
``lexical`` facts; build then gets them as ``extra=``); and ``payload_offset``, ``payload_size`` and
``payload_sha256`` (SHA-256 of the bytes ``[payload_offset, payload_offset + payload_size)``).

Writing goes to a temporary file in the target folder, is fsync-ed and then ``os.replace``-d over the
target, so a reader sees either the old file or the new one, never a partial one.

Reading copies the file into memory first (never a memory map: a file rewritten in place under a map
kills the reader with SIGBUS), checks every structural fact (magic, version, header digest, JSON types,
sizes, offsets, alignment, shapes, payload length) before touching the arrays, verifies the payload
digest (``verify=True``; one SHA-256 pass over the payload, measured 0.14 s for 163 MB), and hands
the mapped arrays to a ``build`` callback (the router's constructor, which copies them into the core's
own storage) before the map is closed. Any problem raises
:class:`RouterFileError` (a ``ValueError``) naming it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import struct
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "PREAMBLE_SIZE",
    "PRECISIONS",
    "RouterFileError",
    "jsonable",
    "metadata_of",
    "read_metadata",
    "read_snapshot",
    "read_state",
    "read_state_bytes",
    "write_state",
]

T = TypeVar("T")
# build(meta, embeddings (n, d) float32, scores (n, M), costs (n, M)) -> the loaded object. The arrays
# may be views into the mapped file: build must copy what it keeps.
Build = Callable[[dict[str, Any], np.ndarray, np.ndarray, np.ndarray], T]

MAGIC = b"KNNROUTE"
FORMAT_VERSION = 1
ALIGN = 64
_PREAMBLE = struct.Struct("<8sII32s")  # magic, version, header length, header sha256
PREAMBLE_SIZE = _PREAMBLE.size  # 48
# Storage precisions of the embeddings section and their on-disk dtypes (bf16 stored as raw uint16).
PRECISIONS: dict[str, str] = {"f32": "<f4", "f16": "<f2", "bf16": "<u2"}
_MAX_HEADER = 1 << 30
# Optional arrays (both or neither): the lexical hybrid's LSA components (k, V) and idf (1, V), both <f4
# (knnroute.embed.lexical). Files without them load unchanged.
OPTIONAL_ARRAYS = ("lexical_components", "lexical_idf")
MAX_LEXICAL_TERMS = 200_000
MAX_LEXICAL_COMPONENTS = 1_024
_WEIGHTINGS = ("uniform", "similarity", "softmax")


class RouterFileError(ValueError):
    """A router file is truncated, corrupt, of an unsupported version or inconsistent."""


def _align(x: int) -> int:
    return (x + ALIGN - 1) // ALIGN * ALIGN


# ----------------------------------------------------------------------------------------- precision
def _to_storage(x: np.ndarray, precision: str) -> np.ndarray:
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    if precision == "f32":
        return x32.astype("<f4", copy=False)
    if precision == "f16":
        return x32.astype("<f2")
    if precision == "bf16":
        # round to nearest even on the upper 16 bits
        u = x32.view(np.uint32).astype(np.uint64)
        rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        return rounded.astype("<u2")
    raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")


def _from_storage(a: np.ndarray, precision: str) -> np.ndarray:
    if precision == "f32":
        return a
    if precision == "f16":
        return np.ascontiguousarray(a, dtype=np.float32)
    return (a.astype(np.uint32) << 16).view(np.float32)


def jsonable(x: Any) -> Any:
    """Plain JSON types (NumPy scalars/arrays converted; non-finite floats -> None)."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    return str(x)


# ---------------------------------------------------------------------------------------------- save
def write_state(state: Mapping[str, Any], path: str | os.PathLike, precision: str = "f32") -> Path:
    """Write plain router state to ``path`` atomically (see the module docstring for the layout).

    ``state`` holds the arrays ``embeddings`` (n, d), ``scores`` and ``costs`` (n, M), the list ``ids``
    (n) and JSON-able metadata (``model_names``, ``prices``, ``knn``, ``embedder``, ``budget``,
    ``fallback``, ``default_lambda``, ``meta``), as made by ``ProductionRouter.state()``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    path = Path(path)
    state = dict(state)
    X = _to_storage(state.pop("embeddings"), precision)
    S = np.ascontiguousarray(state.pop("scores"), dtype="<f4")
    C = np.ascontiguousarray(state.pop("costs"), dtype="<f4")
    n, d = X.shape
    M = S.shape[1]
    if S.shape != (n, M) or C.shape != (n, M) or len(state["ids"]) != n:
        raise ValueError("inconsistent router state: embeddings, scores, costs and ids disagree on n")
    arrays = [("embeddings", X), ("scores", S), ("costs", C)]
    extra = [(name, state.pop(name)) for name in OPTIONAL_ARRAYS if state.get(name) is not None]
    for name in OPTIONAL_ARRAYS:
        state.pop(name, None)
    if extra and len(extra) != len(OPTIONAL_ARRAYS):
        raise ValueError(f"inconsistent router state: the optional arrays {list(OPTIONAL_ARRAYS)} go together")
    arrays += [(name, np.ascontiguousarray(a, dtype="<f4")) for name, a in extra]
    meta = _layout(state, arrays, precision)
    _write_atomic(path, meta, arrays)
    return path


def _layout(state: dict[str, Any], arrays: list[tuple[str, np.ndarray]], precision: str) -> dict[str, Any]:
    """The metadata with array offsets and payload extent (digest still zero)."""
    n, d = arrays[0][1].shape
    meta: dict[str, Any] = {
        "format": "knnroute-router",
        "format_version": FORMAT_VERSION,
        "created_by": _version(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "n": int(n),
        "dim": int(d),
        "n_models": int(arrays[1][1].shape[1]),
        "precision": precision,
        **state,
    }
    # Offsets depend on the header length, which depends on the offsets' digits: iterate to a fixpoint.
    payload_offset = 0
    for _ in range(8):
        offs, pos = {}, payload_offset
        for name, a in arrays:
            pos = _align(pos)
            offs[name] = pos
            pos += a.nbytes
        meta["arrays"] = {
            name: {"dtype": a.dtype.str, "offset": offs[name], "shape": list(a.shape)} for name, a in arrays
        }
        meta["payload_offset"] = payload_offset
        meta["payload_size"] = pos - payload_offset
        meta["payload_sha256"] = "0" * 64
        want = _align(PREAMBLE_SIZE + len(_dumps(meta)))
        if want == payload_offset:
            return meta
        payload_offset = want
    raise RuntimeError("header layout did not converge")  # pragma: no cover - converges in 2-3 steps



def file_mode(path: Path) -> int:
    """The mode a router file is written with: the replaced file's mode when there is one, else what a new
    file gets under the process umask (0644 under umask 022), as ``open()`` would create it."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting it back at once
    os.umask(mask)
    return mask


def _write_atomic(path: Path, meta: dict[str, Any], arrays: list[tuple[str, np.ndarray]]) -> None:
    """Digest the payload, then write preamble, header and payload to a temporary file and rename it."""
    payload_offset = meta["payload_offset"]
    h = hashlib.sha256()
    chunks: list[tuple[int, bytes | memoryview]] = []
    pos = payload_offset
    for name, a in arrays:
        start = meta["arrays"][name]["offset"]
        if start > pos:
            pad = b"\0" * (start - pos)
            h.update(pad)
            chunks.append((pos, pad))
        buf = a.data.cast("B") if a.nbytes else memoryview(b"")
        h.update(buf)
        chunks.append((start, buf))
        pos = start + a.nbytes
    meta["payload_sha256"] = h.hexdigest()
    header = _dumps(meta)
    if _align(PREAMBLE_SIZE + len(header)) != payload_offset:  # same length: only the digest changed
        raise RuntimeError("header length changed after writing the digest")  # pragma: no cover
    pre = _PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(header), hashlib.sha256(header).digest())

    path.parent.mkdir(parents=True, exist_ok=True) if not path.parent.exists() else None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pre)
            fh.write(header)
            fh.write(b"\0" * (payload_offset - PREAMBLE_SIZE - len(header)))
            for _, part in chunks:
                fh.write(part)
            fh.flush()
            os.fchmod(fh.fileno(), file_mode(path))  # mkstemp makes 0600; a router file is shared
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on folders
        pass


def _dumps(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _version() -> str:
    from knnroute import __version__

    return f"knnroute {__version__}"


# ---------------------------------------------------------------------------------------------- load
def _fail(path: Any, msg: str) -> RouterFileError:
    return RouterFileError(f"{path}: {msg}")


def _parse_header(buf: Any, size: int, path: Any) -> dict[str, Any]:
    """Check the preamble and header; return the metadata dict (structure validated)."""
    if size < PREAMBLE_SIZE:
        raise _fail(path, f"truncated: {size} bytes is shorter than the {PREAMBLE_SIZE}-byte preamble")
    magic, version, hlen, hdigest = _PREAMBLE.unpack_from(buf, 0)
    if magic != MAGIC:
        raise _fail(path, f"not a knnroute router file (magic {bytes(magic)!r}, expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise _fail(
            path,
            f"unsupported format version {version} (this knnroute reads version {FORMAT_VERSION}); "
            "re-save the router with a matching knnroute",
        )
    if hlen == 0 or hlen > _MAX_HEADER:
        raise _fail(path, f"corrupt header length {hlen}")
    if PREAMBLE_SIZE + hlen > size:
        raise _fail(path, f"truncated: header needs {PREAMBLE_SIZE + hlen} bytes, file has {size}")
    raw = bytes(buf[PREAMBLE_SIZE : PREAMBLE_SIZE + hlen])
    if hashlib.sha256(raw).digest() != hdigest:
        raise _fail(path, "corrupt header: its SHA-256 does not match")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise _fail(path, f"corrupt header: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise _fail(path, "corrupt header: metadata is not a JSON object")
    _check_meta(meta, size, path)
    return meta


def _get(meta: dict[str, Any], key: str, types: Any, path: Any) -> Any:
    if key not in meta:
        raise _fail(path, f"metadata lacks {key!r}")
    v = meta[key]
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise _fail(path, f"metadata {key!r} has type bool")
    if not isinstance(v, types):
        raise _fail(path, f"metadata {key!r} has type {type(v).__name__}")
    return v


def _check_meta(meta: dict[str, Any], size: int, path: Any) -> None:
    if meta.get("format") != "knnroute-router":
        raise _fail(path, f"metadata format is {meta.get('format')!r}, expected 'knnroute-router'")
    if meta.get("format_version") != FORMAT_VERSION:
        got = meta.get("format_version")
        raise _fail(path, f"metadata format_version {got!r} disagrees with the preamble")
    n = _get(meta, "n", int, path)
    d = _get(meta, "dim", int, path)
    M = _get(meta, "n_models", int, path)
    if n < 1 or d < 1 or M < 1:
        raise _fail(path, f"empty router (n={n}, dim={d}, n_models={M})")
    prec = _get(meta, "precision", str, path)
    if prec not in PRECISIONS:
        raise _fail(path, f"unknown storage precision {prec!r} (this knnroute reads {sorted(PRECISIONS)})")
    names = _get(meta, "model_names", list, path)
    if len(names) != M or not all(isinstance(x, str) for x in names) or len(set(names)) != M:
        raise _fail(path, f"model_names must be {M} distinct strings")
    ids = _get(meta, "ids", list, path)
    if len(ids) != n or not all(isinstance(x, str) for x in ids):
        raise _fail(path, f"ids must be {n} strings")
    knn = _get(meta, "knn", dict, path)
    k = _get(knn, "k", int, path)
    if k < 1:
        raise _fail(path, f"k={k} must be >= 1")
    if _get(knn, "weighting", str, path) not in _WEIGHTINGS:
        raise _fail(path, f"unknown weighting {knn['weighting']!r}")
    for key in ("temperature", "shrinkage", *(("half_life",) if "half_life" in knn else ())):
        v = _get(knn, key, (int, float), path)
        if not np.isfinite(v) or v < 0:
            raise _fail(path, f"{key}={v!r} must be finite and >= 0")
    if meta.get("row_times") is not None and not isinstance(meta["row_times"], list):
        raise _fail(path, "metadata 'row_times' must be a list of [row, time] pairs or null")
    lam = _get(meta, "default_lambda", (int, float), path)
    if not np.isfinite(lam):
        raise _fail(path, "default_lambda must be finite")
    for key in ("embedder", "prices", "budget", "fallback"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise _fail(path, f"metadata {key!r} must be an object or null")
    p0 = _get(meta, "payload_offset", int, path)
    psize = _get(meta, "payload_size", int, path)
    digest = _get(meta, "payload_sha256", str, path)
    if len(digest) != 64:
        raise _fail(path, "payload_sha256 must be 64 hex digits")
    if p0 % ALIGN or p0 < PREAMBLE_SIZE or psize < 0:
        raise _fail(path, f"corrupt payload offset {p0} / size {psize}")
    if p0 + psize > size:
        raise _fail(path, f"truncated: payload ends at byte {p0 + psize}, file has {size} bytes")
    arrays = _get(meta, "arrays", dict, path)
    want = {
        "embeddings": (np.dtype(PRECISIONS[prec]), (n, d)),
        "scores": (np.dtype("<f4"), (n, M)),
        "costs": (np.dtype("<f4"), (n, M)),
    }
    present = [name for name in OPTIONAL_ARRAYS if name in arrays]
    if present:
        if len(present) != len(OPTIONAL_ARRAYS):
            raise _fail(path, f"arrays {list(OPTIONAL_ARRAYS)} go together (the file has only {present})")
        emb = meta.get("embedder")
        if not (isinstance(emb, dict) and isinstance(emb.get("lexical"), dict)):
            raise _fail(path, "lexical arrays without the embedder's 'lexical' facts")
        lk = _get(emb["lexical"], "k", int, path)
        lv = _get(emb["lexical"], "n_terms", int, path)
        if not (1 <= lk <= MAX_LEXICAL_COMPONENTS and 1 <= lv <= MAX_LEXICAL_TERMS):
            raise _fail(path, f"lexical model k={lk}, n_terms={lv} outside 1..{MAX_LEXICAL_COMPONENTS} / "
                              f"1..{MAX_LEXICAL_TERMS}")
        if lk >= d:
            raise _fail(path, f"lexical model k={lk} leaves no dense dimensions in dim={d}")
        want["lexical_components"] = (np.dtype("<f4"), (lk, lv))
        want["lexical_idf"] = (np.dtype("<f4"), (1, lv))
    elif isinstance(meta.get("embedder"), dict) and meta["embedder"].get("lexical") is not None:
        raise _fail(path, "the embedder has 'lexical' facts but the file has no lexical arrays")
    spans = []
    for name, (dt, shape) in want.items():
        a = _get(arrays, name, dict, path)
        # compare the string: never hand an untrusted dtype string to np.dtype (its parser can raise
        # SyntaxError and more; found by fuzz/fuzz_loader.py)
        got_dt = _get(a, "dtype", str, path)
        if got_dt != dt.str:
            raise _fail(path, f"array {name!r} has dtype {got_dt!r}, expected {dt.str!r} "
                              f"for precision {prec!r}")
        shp = _get(a, "shape", list, path)
        if [int(x) if isinstance(x, int) and not isinstance(x, bool) else None for x in shp] != list(shape):
            raise _fail(path, f"array {name!r} has shape {shp}, expected {list(shape)} "
                              f"(n={n}, dim={d}, M={M})")
        off = _get(a, "offset", int, path)
        nbytes = dt.itemsize * shape[0] * shape[1]
        if off % ALIGN or off < p0 or off + nbytes > p0 + psize:
            raise _fail(path, f"array {name!r}: offset {off} (+{nbytes} bytes) lies outside the payload")
        spans.append((off, off + nbytes, name))
    spans.sort()
    for (_, a1, an), (b0, _, bn) in itertools.pairwise(spans):
        if b0 < a1:
            raise _fail(path, f"arrays {an!r} and {bn!r} overlap")


def read_state_bytes(data: bytes, build: Build[T], verify: bool = True, *,
                     expect_dim: int | None = None, source: Any = "<bytes>") -> T:
    """:func:`read_state` from the bytes of a router file (same checks; errors name ``source``)."""
    if len(data) == 0:
        raise RouterFileError(f"{source}: file is empty")
    return _from_buffer(memoryview(data), len(data), source, build, verify, expect_dim)


def metadata_of(data: bytes, source: Any = "<bytes>") -> dict[str, Any]:
    """The validated JSON metadata in the bytes of a router file (no payload check)."""
    return _parse_header(memoryview(data), len(data), source)


def _from_buffer(buf: Any, size: int, path: Any, build: Build[T], verify: bool, expect_dim: int | None) -> T:
    meta = _parse_header(buf, size, path)
    if expect_dim is not None and meta["dim"] != expect_dim:
        raise _fail(path, f"wrong dimension: the router has dim={meta['dim']}, expected {expect_dim}")
    p0, psize = meta["payload_offset"], meta["payload_size"]
    if verify:
        h = hashlib.sha256()
        view = memoryview(buf)
        try:
            step = 1 << 24
            for s in range(p0, p0 + psize, step):
                h.update(view[s : min(s + step, p0 + psize)])
        finally:
            view.release()
        if h.hexdigest() != meta["payload_sha256"]:
            raise _fail(path, "corrupt payload: its SHA-256 does not match the header")
    arrs = {}
    names = ["embeddings", "scores", "costs"] + [a for a in OPTIONAL_ARRAYS if a in meta["arrays"]]
    for name in names:
        spec = meta["arrays"][name]
        shape = tuple(spec["shape"])
        arrs[name] = np.frombuffer(
            buf, dtype=np.dtype(spec["dtype"]), count=shape[0] * shape[1], offset=spec["offset"]
        ).reshape(shape)
    X = _from_storage(arrs["embeddings"], meta["precision"])
    extra = {name: arrs[name] for name in OPTIONAL_ARRAYS if name in arrs}
    try:
        if extra:  # only builds that know the optional arrays take them (old builds see old files)
            return build(meta, X, arrs["scores"], arrs["costs"], extra=extra)  # type: ignore[call-arg]
        return build(meta, X, arrs["scores"], arrs["costs"])
    except RouterFileError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as e:
        raise _fail(path, f"invalid contents: {e}") from None
    finally:
        del X, arrs, extra  # build has copied the arrays: release the buffer exports


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The validated JSON metadata of a router file (reads the header only; no payload check)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(PREAMBLE_SIZE)
        if len(head) == PREAMBLE_SIZE:
            hlen = _PREAMBLE.unpack_from(head, 0)[2]
            head += fh.read(min(hlen, _MAX_HEADER))
    return _parse_header(memoryview(head), size, path) if len(head) >= PREAMBLE_SIZE else _parse_header(
        head, size, path
    )


def read_state(path: str | os.PathLike, build: Build[T], verify: bool = True, *,
               expect_dim: int | None = None) -> T:
    """Read a router file and hand its plain state to ``build(meta, X, S, C)``; returns what it returns.

    The arrays are views into an in-memory snapshot of the file (:func:`read_snapshot`; embeddings
    widened to float32 when stored as f16/bf16): ``build`` must copy what it keeps.

    Parameters
    ----------
    path : path
    build : callable (meta dict, embeddings (n, d), scores (n, M), costs (n, M)) -> T
        Its ``ValueError`` / ``TypeError`` / ``KeyError`` / ``IndexError`` / ``OverflowError`` become a
        :class:`RouterFileError` ("invalid contents").
    verify : bool, default True
        Check the payload's SHA-256 (one pass over the file's arrays). Structural checks (sizes, offsets,
        shapes, header digest) always run.
    expect_dim : int, optional
        Refuse a file whose embedding dimension differs.

    Raises
    ------
    RouterFileError (a ValueError)
        Truncated, corrupt, wrong version, wrong dimension, unknown precision, inconsistent metadata.
    FileNotFoundError
    """
    path = Path(path)
    data = read_snapshot(path)
    return _from_buffer(memoryview(data), len(data), path, build, verify, expect_dim)


def read_snapshot(path: str | os.PathLike, attempts: int = 5) -> bytes:
    """The bytes of ``path``, read into memory as one consistent snapshot.

    Never memory-mapped: a writer that truncates or rewrites a mapped file in place makes the reader's
    next page access raise SIGBUS and kill the process. The file is read whole and its size and mtime
    compared before and after; a file that changed during the read is read again (up to ``attempts``
    times), then refused with a :class:`RouterFileError` saying it keeps changing. The payload digest
    (``verify=True``) then proves the snapshot is the file that was written.
    """
    path = Path(path)
    for _ in range(max(1, attempts)):
        with open(path, "rb") as fh:
            st0 = os.fstat(fh.fileno())
            if st0.st_size == 0:
                raise _fail(path, "file is empty")
            data = fh.read(st0.st_size + 1)  # one byte more: notices a file that grew meanwhile
            st1 = os.fstat(fh.fileno())
        if len(data) == st0.st_size and (st0.st_size, st0.st_mtime_ns) == (st1.st_size, st1.st_mtime_ns):
            return data
        time.sleep(0.01)
    raise _fail(path, f"the file kept changing while it was read ({attempts} attempts); "
                      "write router files atomically (knnroute saves do: temporary file + rename)")
