"""`config show` and `config reference`: the settings in effect, and every one there is."""

from __future__ import annotations

import json

import typer

config_app = typer.Typer(
    help="The settings: in effect, and every one there is.", no_args_is_help=True
)


@config_app.command("show")
def config_show() -> None:
    """The settings in effect (file, environment and defaults merged) as JSON; secrets masked."""
    from distillguard.config import config_path, load_settings

    settings = load_settings()
    print(
        json.dumps({"file": str(config_path() or ""), **settings.model_dump(mode="json")}, indent=2)
    )


@config_app.command("reference")
def config_reference() -> None:
    """Every setting with its default, environment variable and meaning (Markdown)."""
    from distillguard.config_reference import reference

    print(reference(), end="")
