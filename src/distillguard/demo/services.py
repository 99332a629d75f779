"""The demo's servers: real `distillguard` processes on loopback ports, as an operator runs
them (gateway, hub), and the synthetic upstream. Each stops when its context exits."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from distillguard.errors import DistillguardError

STARTUP_SECONDS = 120.0  # the bundled model loads in seconds once converted; the first time ~30 s


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def distillguard(*args: str) -> list[str]:
    """The command line that runs `distillguard ARGS` with this interpreter."""
    return [sys.executable, "-m", "distillguard", *args]


class Server:
    """One child process, its output in `log`; `health` answers 200 once it serves."""

    def __init__(
        self, name: str, argv: Sequence[str], health: str, log: Path, env: dict[str, str]
    ) -> None:
        self.name, self.health, self.log = name, health, log
        with log.open("ab") as out:
            self.child = subprocess.Popen(
                list(argv), stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}
            )

    def wait(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.child.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise DistillguardError(
                    f"the demo's {self.name} exited at start; its log ({self.log}):\n{tail}"
                )
            try:
                if httpx.get(self.health, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise DistillguardError(
            f"the demo's {self.name} did not start in {STARTUP_SECONDS:.0f} s ({self.log})"
        )

    def stop(self) -> None:
        """SIGTERM, as an orchestrator stops it (the gateway drains its event queue)."""
        self.child.terminate()
        try:
            self.child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()
