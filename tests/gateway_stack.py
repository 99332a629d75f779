"""A real gateway (the `distillguard serve` console script) in front of the fake upstream.

Both run as subprocesses on loopback ports, exactly as a user would start them;
tests talk to them over HTTP with the official openai SDK or httpx.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.helpers import EXE, run
from tests.servers import free_port

FAKE_UPSTREAM = Path(__file__).parent / "fake_upstream.py"


@dataclass
class Stack:
    url: str  # the gateway's /v1 base URL
    store: str  # its database URL
    process: subprocess.Popen

    def stop(self) -> int:
        """Graceful shutdown (SIGTERM), as an orchestrator does; returns the exit code.

        uvicorn re-raises the signal once it has shut down, so a clean stop
        reads as -SIGTERM.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def _wait_healthy(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    last = "no answer"  # what the server said last: why it never became healthy
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited early:\n{process.stderr.read() if process.stderr else ''}"
            )
        try:
            response = httpx.get(url, timeout=1)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{url} not healthy in time; last: {last}")


@contextmanager
def fake_upstream() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(FAKE_UPSTREAM), str(port)])
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/v1/models", process)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def gateway(
    upstream: str | None, store: str, *extra: str, env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """`distillguard serve` proxying `upstream` (None: the backend is chosen by `extra`)."""
    port = free_port()
    settings = {
        "DISTILLGUARD_GATEWAY__KEY_REFRESH_SECONDS": "0.2",
        "DISTILLGUARD_GATEWAY__UPSTREAM_TIMEOUT": "3",
        "DISTILLGUARD_GATEWAY__MAX_BODY_BYTES": "4096",
        **(env or {}),
    }
    backend = ["--upstream", upstream] if upstream is not None else []
    process = subprocess.Popen(
        [EXE, "serve", *backend, "--port", str(port), "--store", store, *extra],
        env={**os.environ, **settings},
        stderr=subprocess.PIPE,
        text=True,
    )
    stack = Stack(f"http://127.0.0.1:{port}/v1", store, process)
    try:
        try:
            _wait_healthy(f"http://127.0.0.1:{port}/healthz", process)
        except RuntimeError as exc:
            if process.poll() is not None:
                raise
            stack.stop()
            log = process.stderr.read() if process.stderr else ""
            raise RuntimeError(f"{exc}\nits log:\n{log[-3000:]}") from None
        yield stack
    finally:
        try:
            stack.stop()
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def hub_member(store: str, name: str, *flags: str) -> str:
    """`distillguard hub member add NAME FLAGS…`: the member's token."""
    result = run("hub", "member", "add", name, *flags, "--store", store)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@contextmanager
def hub_server(store: str) -> Iterator[str]:
    """`distillguard hub serve` on a free loopback port; yields its API root URL."""
    port = free_port()
    process = subprocess.Popen(
        [EXE, "hub", "serve", "--port", str(port), "--store", store],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/taxii2/", process)
        yield f"http://127.0.0.1:{port}/api/"
    finally:
        process.terminate()
        process.wait(timeout=30)
