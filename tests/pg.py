"""A real PostgreSQL server for the tests, started by them: the distribution's binaries
(`scripts/setup_postgres.sh`, run by `make test`, installs them), a cluster made with `initdb` in
a temporary folder, listening on a free loopback port. PostgreSQL refuses to run as root: a
root test process runs it as the unprivileged `postgres` user (or `nobody`). Never a mock.

`pg_server` is one server per test session; `pg_dsn` a new, empty database in it per test.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SETUP_HINT = "run `bash scripts/setup_postgres.sh` (make test does) to install PostgreSQL"


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        pytest.fail(f"no PostgreSQL server binaries (initdb): {SETUP_HINT}")
    return Path(initdb).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    """One PostgreSQL cluster in a folder of its own; `restart` and `stop` for fault tests."""

    bindir: Path
    data: Path
    port: int
    user: str | None  # the account the server runs as, where the tests run as root

    @property
    def dsn(self) -> str:
        return f"postgresql://arena@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data / "db"),
            "-l",
            str(self.data / "log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `fast` (clients cut off, clean) or `immediate` (as a crash: the
        next start recovers from the write-ahead log)."""
        self._run("pg_ctl", "-D", str(self.data / "db"), "-m", mode, "-w", "stop", check=False)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def create_database(self) -> str:
        """A new, empty database; its DSN."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn.rsplit("/", 1)[0] + f"/{name}"


def _account() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    pytest.fail("the tests run as root and there is no unprivileged account to run PostgreSQL")


def start_server() -> PgServer:
    bindir = _bindir()
    user = _account()
    data = Path(tempfile.mkdtemp(prefix="arena-pg-"))  # /tmp: reachable by the server's user
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(data, entry.pw_uid, entry.pw_gid)
    server = PgServer(bindir, data, _free_port(), user)
    server._run(
        "initdb",
        "-D",
        str(data / "db"),
        "-U",
        "arena",
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
    )
    server.start()
    return server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = start_server()
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(server.data, ignore_errors=True)


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> str:
    deadline = time.monotonic() + 30
    while True:  # a fault test may have just restarted the server
        try:
            return pg_server.create_database()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
