"""atheris fuzz target: loading a router file that changes underneath the reader (issue 17 defect 1).

The file lives on disk; the fuzzer chooses an edit -- truncate to a length, overwrite bytes in place,
replace the content with another valid router, grow it, delete it -- and the moment it happens: before
the load, while the reader holds the file open (between its ``fstat`` and its ``read``), after the
reader has its buffer (before the header is parsed: a memory-mapped reader dies with SIGBUS here), or
between the reload's signature checks. Paths exercised: ``knnroute.load`` (``read_state``) and
``RouterSlot.reload`` (``read_snapshot`` + ``loads``).

Contract: a load returns a router that routes, or raises ``ValueError`` (``RouterFileError``) /
``OSError``; a failed reload leaves the slot's previous router serving (same generation, routes).
A crash (the old memory-mapped loader died with SIGBUS here) or any other exception is a finding.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["knnroute"]):
    import numpy as np

    from knnroute.production import ProductionRouter, load
    from knnroute.production import persist as persist_mod
    from knnroute.routers.knn import KNNRouter
    from knnroute.service import slot as slot_mod


def _router_bytes(seed: int, n: int) -> bytes:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8)).astype(np.float32)
    S = rng.random((n, 3))
    C = rng.random((n, 3)) * 1e-3
    p = ProductionRouter(KNNRouter(k=4).fit(X, S, C, model_names=["a", "b", "c"]))
    with tempfile.TemporaryDirectory() as td:
        return p.save(Path(td) / "r.knnr").read_bytes()


SEEDS = [_router_bytes(0, 40), _router_bytes(1, 300)]
DIR = Path(tempfile.mkdtemp(prefix="knnroute-fuzz-load."))
PATH = DIR / "live.knnr"
PATH.write_bytes(SEEDS[0])
SLOT = slot_mod.RouterSlot.from_path(PATH, load_embedder=False)
Q = np.ones(8, dtype=np.float32)
REAL_SIGNATURE = slot_mod._file_signature
REAL_PARSE_HEADER = persist_mod._parse_header


def _parse_header_then_edit(fdp: atheris.FuzzedDataProvider):  # type: ignore[no-untyped-def]
    def parse(buf, size, path):  # type: ignore[no-untyped-def]
        _edit(fdp)  # the reader already has its buffer: a memory map here would see the edit (SIGBUS)
        return REAL_PARSE_HEADER(buf, size, path)

    return parse


def _edit(fdp: atheris.FuzzedDataProvider) -> None:
    """Change the file on disk in place (never by rename: that is the safe case)."""
    kind = fdp.ConsumeIntInRange(0, 4)
    try:
        if kind == 0:  # truncate
            size = PATH.stat().st_size
            os.truncate(PATH, fdp.ConsumeIntInRange(0, size))
        elif kind == 1:  # overwrite bytes in place
            with open(PATH, "r+b") as fh:
                size = os.fstat(fh.fileno()).st_size
                for _ in range(fdp.ConsumeIntInRange(1, 4)):
                    fh.seek(fdp.ConsumeIntInRange(0, max(0, size - 1)))
                    fh.write(fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 16)) or b"\0")
        elif kind == 2:  # rewritten in place with another valid router, possibly cut short
            new = SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)]
            with open(PATH, "r+b") as fh:
                fh.truncate(0)
                fh.write(new[: fdp.ConsumeIntInRange(0, len(new))])
        elif kind == 3:  # grows
            with open(PATH, "ab") as fh:
                fh.write(b"\0" * fdp.ConsumeIntInRange(1, 4096))
        else:
            PATH.unlink()
    except OSError:
        pass


class _Hooked:
    """``open`` for persist: the file object edits the file after ``fstat`` and before ``read``."""

    def __init__(self, fdp: atheris.FuzzedDataProvider) -> None:
        self.fdp = fdp

    def __call__(self, path, mode="r", *a, **kw):  # type: ignore[no-untyped-def]
        fh = open(path, mode, *a, **kw)  # noqa: SIM115 - returned to the caller's with-block
        if "b" in mode and self.fdp.ConsumeBool():
            real_read = fh.read

            def read(n: int = -1) -> bytes:
                _edit(self.fdp)
                return real_read(n)

            fh.read = read  # type: ignore[method-assign]
        return fh


def _reset(fdp: atheris.FuzzedDataProvider) -> None:
    PATH.write_bytes(SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)])


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    _reset(fdp)
    when = fdp.ConsumeIntInRange(0, 3)
    if when == 0:
        _edit(fdp)
    persist_mod.open = _Hooked(fdp) if when == 1 else open  # type: ignore[attr-defined]
    if when == 3:
        persist_mod._parse_header = _parse_header_then_edit(fdp)  # type: ignore[assignment]
    try:
        if fdp.ConsumeBool():
            try:
                r = load(PATH, verify=fdp.ConsumeBool())
            except (ValueError, OSError):
                return
            r.decide(Q, 1.0)
            return
        before = SLOT.state.generation
        if when == 2:

            def sig(p: str) -> tuple[int, int, int, int]:
                out = REAL_SIGNATURE(p)
                _edit(fdp)  # changes the file between the reload's checks
                return out

            slot_mod._file_signature = sig  # type: ignore[assignment]
        try:
            SLOT.reload()
        except (ValueError, OSError):
            if SLOT.state.generation != before:
                raise AssertionError("a failed reload replaced the router") from None
        finally:
            slot_mod._file_signature = REAL_SIGNATURE
        SLOT.router.decide(Q, 1.0)
    finally:
        persist_mod.open = open  # type: ignore[attr-defined]
        persist_mod._parse_header = REAL_PARSE_HEADER  # type: ignore[assignment]


def main() -> None:
    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
