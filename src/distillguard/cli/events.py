"""`events export`: the gateway's request events as JSON lines."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from distillguard.cli.common import StoreOption, parse_time, store_url
from distillguard.errors import DistillguardError

events_app = typer.Typer(help="The gateway's request events.", no_args_is_help=True)


@events_app.command("export")
def events_export(
    format: Annotated[str, typer.Option("--format", help="Output format: jsonl.")] = "jsonl",
    since: Annotated[
        str | None, typer.Option(help="Events at or after: RFC 3339 (…Z) or Unix seconds.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Events before: RFC 3339 (…Z) or Unix seconds.")
    ] = None,
    account: Annotated[str | None, typer.Option(help="Only this account.")] = None,
    store: StoreOption = None,
) -> None:
    """Write events as JSON lines on stdout, oldest first (schema: docs/events.md)."""
    from distillguard.store import EventStore, open_engine

    if format != "jsonl":
        raise DistillguardError(f"unknown format {format!r}: the only format is jsonl")
    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    events = EventStore(open_engine(store_url(store)))
    out = sys.stdout
    for row in events.read(since=start, until=end, account_id=account):
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
