"""Running the real `distillguard` console script as a user would."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

EXE = shutil.which("distillguard", path=str(Path(sys.executable).parent))


def run(*args: str, stdin: str | None = None, env: dict | None = None, cwd: Path | None = None):
    return subprocess.run(
        [EXE, *args],
        input=stdin,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def assert_user_error(result, fragment: str):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert result.stdout == ""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def umask(value: int) -> Iterator[None]:
    """Children started inside inherit `value`: modes must not depend on the caller's umask."""
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)
