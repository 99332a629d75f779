"""The `distillguard` command: thin sub-commands over the library modules.

Results go to stdout (JSON where a program reads them); progress and notes go
to stderr. Input and configuration errors print one line and exit 2. Each command
group has its module here; `common` holds what several of them use.
"""

from __future__ import annotations

import os
import sys

import typer

from distillguard.cli import (
    accounts,
    config,
    demo,
    events,
    exchange,
    hub,
    model,
    serve,
    suspect,
    trace,
    watermark,
)
from distillguard.errors import DistillguardError

EXIT_USAGE = 2

app = typer.Typer(
    help="Defend an LLM API against adversarial distillation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for command in (demo.demo, model.generate, serve.serve, trace.simulate):
    app.command()(command)
for name, group in (
    ("watermark", watermark.watermark_app),
    ("keys", accounts.keys_app),
    ("accounts", accounts.accounts_app),
    ("orgs", accounts.orgs_app),
    ("events", events.events_app),
    ("trace", trace.trace_app),
    ("hub", hub.hub_app),
    ("exchange", exchange.exchange_app),
    ("suspect", suspect.suspect_app),
    ("config", config.config_app),
):
    app.add_typer(group, name=name)


def main() -> None:
    """Console-script entry: user errors become one line on stderr and exit code 2."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub at run time
    try:
        app()
    except DistillguardError as exc:
        print(f"distillguard: error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        print("distillguard: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
