"""`events export`: the gateway's request events as JSON lines."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from distillguard.cli.common import StoreOption, store_url
from distillguard.errors import DistillguardError

events_app = typer.Typer(help="The gateway's request events.", no_args_is_help=True)


@events_app.command("export")
def events_export(
    format: Annotated[str, typer.Option("--format", help="Output format: jsonl.")] = "jsonl",
    since: Annotated[float | None, typer.Option(help="Unix time: events at or after.")] = None,
    until: Annotated[float | None, typer.Option(help="Unix time: events before.")] = None,
    account: Annotated[str | None, typer.Option(help="Only this account.")] = None,
    store: StoreOption = None,
) -> None:
    """Write events as JSON lines on stdout, oldest first (schema: docs/events.md)."""
    from distillguard.store import EventStore, open_engine

    if format != "jsonl":
        raise DistillguardError(f"unknown format {format!r}: the only format is jsonl")
    events = EventStore(open_engine(store_url(store)))
    out = sys.stdout
    for row in events.read(since=since, until=until, account_id=account):
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
