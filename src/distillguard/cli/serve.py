"""`serve`: the OpenAI-compatible gateway, its settings overridden from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from distillguard.cli.common import StoreOption
from distillguard.config import load_settings
from distillguard.errors import DistillguardError


def serve(
    upstream: Annotated[
        str | None, typer.Option(help="Base URL of an OpenAI-compatible API to proxy.")
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            help="`bundled`: answer with the bundled model (with --upstream too: "
            "requests naming it are answered here, the rest proxied)."
        ),
    ] = None,
    watermark_key: Annotated[
        Path | None, typer.Option(help="Watermark key file (default: the embedded key).")
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on (default: gateway.host, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="TCP port (default: gateway.port, 8000).")
    ] = None,
    store: StoreOption = None,
    redis: Annotated[
        str | None, typer.Option(help="redis:// URL: share limits across replicas.")
    ] = None,
    shadow: Annotated[
        bool | None, typer.Option("--shadow", help="Log limit and policy decisions, enforce none.")
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Processes sharing the port (more than 1 needs --redis).")
    ] = 1,
    access_log: Annotated[
        bool, typer.Option("--access-log", help="A log line per request (stderr).")
    ] = False,
    json_logs: Annotated[
        bool, typer.Option("--json-logs", help="Logs as JSON lines, for a log pipeline.")
    ] = False,
) -> None:
    """Run the OpenAI-compatible gateway."""
    from distillguard.gateway.server import serve as run

    if engine not in (None, "bundled"):
        raise DistillguardError(f"unknown engine {engine!r}: the only engine is `bundled`")
    overrides = {
        "upstream": upstream,
        "engine": engine,
        "watermark_key": watermark_key,
        "host": host,
        "port": port,
        "store": store,
        "redis": redis,
        "shadow": shadow,
    }
    settings = load_settings()
    gateway = settings.gateway.model_copy(
        update={k: v for k, v in overrides.items() if v is not None}
    )
    # The command line picks the backend: one flag there overrides the other's configured value.
    if upstream is not None and engine is None:
        gateway.engine = None
    if engine is not None and upstream is None:
        gateway.upstream = None
    settings = settings.model_copy(update={"gateway": gateway})
    run(settings, workers, access_log=access_log, json_logs=json_logs)
