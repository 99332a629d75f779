"""Private Redis and PostgreSQL servers for tests.

Tests talk to real servers rather than fakes, because what we need to trust (Lua atomicity,
Redis `TIME`, SQL dialects) is exactly what fakes get wrong. Each server runs on a free
loopback port in its own temporary directory, persists nothing, and is torn down when the
context exits. `scripts/services.sh` installs the binaries.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

STARTUP_TIMEOUT = 30.0
INSTALL_HINT = "run scripts/services.sh (or `make services`) to install it"


class MissingBinary(RuntimeError):
    """A server binary is not installed; the message says how to install it."""


def find_binary(name: str) -> str:
    """`name` on PATH, else in the newest /usr/lib/postgresql/*/bin (Debian keeps it there)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    if candidates:
        return max(candidates, key=lambda p: int(Path(p).parts[-3]))
    raise MissingBinary(f"`{name}` not found; {INSTALL_HINT}")


def free_port() -> int:
    """A loopback port free right now (the server binds it moments later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until(ready: Callable[[], bool], proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(f"{what} exited with {proc.returncode} during startup:\n{out}")
        with suppress(Exception):
            if ready():
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready after {STARTUP_TIMEOUT:.0f}s")


def _stop(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()


@contextmanager
def redis_server(port: int | None = None) -> Iterator[str]:
    """Yield `redis://127.0.0.1:PORT/0` of a throwaway, non-persistent redis-server
    (on `port` when given: a restart where clients expect it)."""
    import redis

    exe = find_binary("redis-server")
    workdir = tempfile.mkdtemp(prefix="dg-redis-")
    port = port or free_port()
    cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir]
    cmd += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", ""]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"redis://127.0.0.1:{port}/0"

        def ready() -> bool:
            with redis.Redis.from_url(url, socket_connect_timeout=1) as client:
                return bool(client.ping())

        _wait_until(ready, proc, "redis-server")
        yield url
    finally:
        _stop(proc, signal.SIGTERM)
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def postgres_server(dbname: str = "distillguard_test") -> Iterator[str]:
    """Yield `postgresql+psycopg://postgres@127.0.0.1:PORT/DBNAME` of a throwaway cluster.

    PostgreSQL refuses to run as root, so as root the cluster is owned by and run as the
    `postgres` system user (Popen's user=, no intermediate process to signal through).
    Authentication is `trust`: the server only listens on loopback and a private socket dir.
    """
    import psycopg

    initdb, postgres = find_binary("initdb"), find_binary("postgres")
    as_user: dict = {}
    workdir = tempfile.mkdtemp(prefix="dg-pg-")
    if os.geteuid() == 0:
        as_user = {"user": "postgres", "group": "postgres", "extra_groups": []}
        shutil.chown(workdir, "postgres", "postgres")
    data = os.path.join(workdir, "data")
    proc: subprocess.Popen | None = None
    try:
        init = [initdb, "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"]
        done = subprocess.run(
            [*init, "--no-sync"], capture_output=True, text=True, cwd=workdir, **as_user
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        port = free_port()
        cmd = [postgres, "-D", data, "-p", str(port), "-k", workdir]
        for setting in ("listen_addresses=127.0.0.1", "fsync=off", "full_page_writes=off"):
            cmd += ["-c", setting]
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=workdir, **as_user
        )
        conninfo = f"host=127.0.0.1 port={port} user=postgres connect_timeout=1"

        def ready() -> bool:
            with psycopg.connect(conninfo + " dbname=postgres") as conn:
                return conn.execute("select 1").fetchone() == (1,)

        _wait_until(ready, proc, "postgres")
        with psycopg.connect(conninfo + " dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{dbname}"
    finally:
        if proc is not None:
            _stop(proc, signal.SIGINT)  # "fast" shutdown: does not wait for clients
        shutil.rmtree(workdir, ignore_errors=True)


def new_database(url: str, name: str) -> str:
    """A new, empty database beside `url`'s on the same PostgreSQL server; its URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(url)
    conninfo = f"host={server.host} port={server.port} user={server.username} dbname=postgres"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.set(database=name).render_as_string(hide_password=False)
