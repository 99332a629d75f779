"""What several command groups share: the consoles, the store option, the bundled model
with its progress bar, and output files written whole."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from distillguard.config import Settings, load_settings
from distillguard.errors import DistillguardError

if TYPE_CHECKING:
    from distillguard.engine.transformers_engine import TransformersEngine

StoreOption = Annotated[
    str | None,
    typer.Option("--store", help="Database URL (default: the configured store, else SQLite)."),
]
EventsFile = Annotated[
    Path | None, typer.Option("--events", help="Events JSONL (default: the store's event log).")
]

err = Console(stderr=True)
screen = Console()


def store_url(store: str | None) -> str:
    """The `--store` given, else the configured store, else the default SQLite file."""
    from distillguard.store import default_store_url

    return store or load_settings().gateway.store or default_store_url()


def parse_time(value: str | None, option: str) -> float | None:
    """An option's time: Unix seconds, or RFC 3339 with a zone (`2026-11-02T09:00:00Z`)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise DistillguardError(
            f"{option} {value!r}: give Unix seconds or an RFC 3339 time such as "
            "2026-11-02T09:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        raise DistillguardError(f"{option} {value!r} has no time zone: add Z (UTC) or +HH:MM")
    return parsed.timestamp()


def conversion_notice(gguf: Path) -> None:
    err.print(f"[dim]first run: converting {gguf.name} to the local cache (one-off)…[/dim]")


def bundled_engine(settings: Settings) -> TransformersEngine:
    from distillguard.engine.transformers_engine import TransformersEngine

    with err.status("loading the bundled model…"):
        return TransformersEngine.bundled(settings.cache_dir, on_convert=conversion_notice)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )


def check_writable(path: Path | None) -> None:
    """Fail before the work, not after it: the directory must exist."""
    if path is not None and not path.parent.is_dir():
        raise DistillguardError(f"cannot write {path}: {path.parent} is not a directory")


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DistillguardError(
            f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
        ) from None


def read_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DistillguardError(f"{path} is not JSON: {exc}") from None


def write_json(path: Path, document: dict) -> None:
    """Whole or not at all: written beside the target, then renamed over it."""
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n")
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise DistillguardError(f"cannot write {path}: {exc.strerror}") from None
