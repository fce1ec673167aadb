"""The router slot: the live router of a service, swapped atomically on reload.

A reload (admin endpoint, the file watcher of ``watch_interval``, or a Ray Serve ``reconfigure``) loads and
checks the new file completely, then replaces the slot's state in one assignment; each request reads the
state once, so it is answered wholly by the old router or wholly by the new one, and a file that fails to
load leaves the old router serving.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass

from knnroute.production.files import loads
from knnroute.production.persist import RouterFileError, metadata_of, read_snapshot
from knnroute.production.router import ProductionRouter

__all__ = ["RouterSlot", "SlotState"]

log = logging.getLogger("knnroute.serve")


def _file_signature(path: str) -> tuple[int, int, int, int]:
    """(device, inode, size, mtime_ns): changes when the file is replaced (atomic save) or rewritten."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class SlotState:
    """One loaded router and what the service reports about it (replaced as a whole on reload)."""

    router: ProductionRouter
    prompt_ok: bool  # prompts are accepted (the embedder is loaded and warm)
    generation: int  # 1 for the first router, +1 per reload
    digest: str | None  # the file's payload SHA-256 (None for an in-memory router)
    signature: tuple[int, int, int, int] | None
    loaded_at: float  # UNIX time


class RouterSlot:
    """The live router of a service, swapped atomically on reload.

    Parameters
    ----------
    router : ProductionRouter
    path : router file it came from (needed for :meth:`reload` and :meth:`watch`)
    verify : check the payload checksum on reload
    load_embedder : load (and warm) the router's recorded embedder so prompts are accepted; a reload keeps
        the loaded embedder when the new file records the same embedder identity
    """

    def __init__(self, router: ProductionRouter, *, path: str | os.PathLike | None = None,
                 verify: bool = True,
                 load_embedder: bool = True, digest: str | None = None,
                 signature: tuple[int, int, int, int] | None = None) -> None:
        self.path = None if path is None else str(path)
        self.verify = bool(verify)
        self.load_embedder = bool(load_embedder)
        self.last_error: str | None = None
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.watch_interval: float | None = None
        self._failed_signature: tuple[int, int, int, int] | None = None
        self._state = self._prepare(router, None, 1, digest, signature)

    @classmethod
    def from_path(cls, path: str | os.PathLike, *, verify: bool = True,
                  load_embedder: bool = True) -> RouterSlot:
        """Load ``path`` (see :func:`knnroute.production.load`) into a new slot."""
        router, digest, sig = cls._load(str(path), verify)
        return cls(router, path=path, verify=verify, load_embedder=load_embedder, digest=digest,
                   signature=sig)

    @staticmethod
    def _load(path: str, verify: bool) -> tuple[ProductionRouter, str | None, tuple[int, int, int, int]]:
        """Load one consistent snapshot of the file (read into memory, never mapped: a file rewritten in
        place cannot crash the service); its digest and signature are those of the bytes loaded. A file
        that keeps changing is refused (:class:`RouterFileError`), and a reload then keeps the old router."""
        for _ in range(5):
            before = _file_signature(path)
            data = read_snapshot(path)
            if _file_signature(path) == before:
                digest = metadata_of(data, path).get("payload_sha256")
                return loads(data, verify=verify, source=path), digest, before
            time.sleep(0.02)
        raise RouterFileError(f"{path}: the file kept changing during the load (5 attempts); write router "
                              "files atomically (temporary file + rename, as knnroute's save does)")

    def _prepare(self, router: ProductionRouter, old: SlotState | None, generation: int, digest: str | None,
                 signature: tuple[int, int, int, int] | None) -> SlotState:
        prompt_ok = False
        if self.load_embedder and router.has_embedder:
            prev = None if old is None else old.router.encoder.loaded
            if prev is not None and getattr(prev, "identity", None) == router.encoder.identity:
                router.set_embedder(prev)  # same model: keep the loaded weights
            emb = router.embedder()
            t0 = time.perf_counter()
            router.embed(["warm-up"])  # loads the weights (torch) once, before the first request
            prompt_ok = True
            log.info("embedder %s ready in %.1f s", emb.identity, time.perf_counter() - t0)
        return SlotState(router, prompt_ok, generation, digest, signature, time.time())

    @property
    def state(self) -> SlotState:
        """The current state; read it once per request."""
        return self._state

    @property
    def router(self) -> ProductionRouter:
        return self._state.router

    @property
    def size(self) -> int:
        return self._state.router.size

    @property
    def model_names(self) -> list[str]:
        return self._state.router.model_names

    def reload(self, path: str | os.PathLike | None = None) -> SlotState:
        """Load the router file (``path`` switches to another file) and swap it in; returns the new state.

        Raises what :func:`knnroute.production.load` raises; the old router keeps serving then.
        """
        with self._reload_lock:
            target = str(path) if path is not None else self.path
            if target is None:
                raise ValueError(
                    "this service was started from an in-memory router: there is no file to reload"
                )
            t0 = time.perf_counter()
            try:
                router, digest, sig = self._load(target, self.verify)
                state = self._prepare(router, self._state, self._state.generation + 1, digest, sig)
            except Exception as e:
                self.last_error = f"{type(e).__name__}: {e}"
                raise
            self._state = state  # the swap: one reference assignment
            self.path = target
            self.last_error = None
            self._failed_signature = None
            log.info("reloaded %r from %s (generation %d) in %.2f s", router, target, state.generation,
                     time.perf_counter() - t0)
            return state

    def changed(self) -> bool:
        """Whether the file differs (by device, inode, size, mtime) from the one loaded."""
        if self.path is None:
            return False
        try:
            sig = _file_signature(self.path)
        except OSError:
            return False  # replaced right now, or gone: keep serving the loaded router
        return sig != self._state.signature and sig != self._failed_signature

    def check(self) -> bool:
        """Reload when the file changed; True when a new router was swapped in. Load errors are logged
        (the old router keeps serving) and not retried until the file changes again."""
        if not self.changed():
            return False
        try:
            self.reload()
            return True
        except Exception:
            try:
                self._failed_signature = _file_signature(self.path)  # type: ignore[arg-type]
            except OSError:
                pass
            log.exception("reload of %s failed; still serving generation %d", self.path,
                          self._state.generation)
            return False

    def watch(self, interval: float = 2.0) -> None:
        """Poll the file every ``interval`` seconds in a daemon thread and reload it when it changes."""
        if self.path is None:
            raise ValueError("cannot watch an in-memory router: start the service from a file")
        if not (interval > 0 and math.isfinite(interval)):
            raise ValueError(f"watch interval must be a positive number of seconds, got {interval!r}")
        if self._watcher is not None:
            return
        self.watch_interval = float(interval)

        def loop() -> None:
            while not self._stop.wait(self.watch_interval):
                self.check()

        self._watcher = threading.Thread(target=loop, name="knnroute-router-watch", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        """Stop the watcher thread (if any)."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(5)
            self._watcher = None
