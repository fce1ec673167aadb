"""A real PostgreSQL server for the tests and benchmarks: ``initdb`` in a temporary folder, a loopback port,
torn down after. ``initdb`` refuses root, so as root the server runs as the ``postgres`` user (the Debian
package creates it; ``.ci/run`` installs the package when the binaries are missing)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.servers import free_port

__all__ = ["PostgresUnavailable", "create_database", "postgres_server"]


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be started here (the reason is the message)."""


def _bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)),
                                       None)
    if found is None:
        raise PostgresUnavailable(f"{name} not found: install PostgreSQL (apt-get install postgresql)")
    return found


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a throw-away server; yields its URL (user ``knnroute``, trust auth on loopback only)."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    folder = Path(tempfile.mkdtemp(prefix="knnroute-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder, ignore_errors=True)
            raise PostgresUnavailable("running as root and there is no 'postgres' user to run initdb as") from None
        os.chmod(folder, 0o700)
        os.chown(folder, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, log = folder / "data", folder / "server.log"
    port = free_port()

    def run(cmd: list[str], timeout: float = 120) -> None:
        r = subprocess.run(prefix + cmd, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
            raise PostgresUnavailable(f"{Path(cmd[0]).name} failed: {tail[0]}")

    started = False
    try:
        run([initdb, "-D", str(data), "-U", "knnroute", "-A", "trust", "--no-sync", "-E", "UTF8"])
        run([pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
             f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200", "start"])
        started = True
        yield f"postgresql://knnroute@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run(prefix + [pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True,
                           timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


_N = [0]


def create_database(url: str) -> str:
    """A fresh database on the server at ``url``; returns its URL."""
    import psycopg

    _N[0] += 1
    name = f"t{os.getpid()}_{_N[0]}_{int(time.time() * 1000) % 100000}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + "/" + name
