"""The configuration reference (docs/configuration.md), built from the settings themselves:
every setting's name, default, environment variable and description, so the page cannot
drift from the code (a test compares them)."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, SecretStr

from distillguard import config
from distillguard.policy import Limits

# The one settings type that is not a model: a scope's limits (policy.Limits).
LIMIT_WORDS = {
    "rpm": "Requests per minute.",
    "tpm": "Tokens per minute (prompt and answer).",
    "tpd": "Tokens per day.",
    "concurrency": "Requests open at once.",
}

HEADER = """# Configuration reference

Every setting, its default and its environment variable. Precedence (highest first):
command-line options, `DISTILLGUARD_*` environment variables (nested with `__`), the TOML
file named by `DISTILLGUARD_CONFIG` (else `./distillguard.toml` if it exists), then the
defaults below. A table or variable changes only what it names; the rest keep their
defaults. For example:

```toml
[gateway]
upstream = "http://127.0.0.1:8001/v1"
store = "postgresql://distillguard@db/distillguard"

[gateway.output.watch]
max_n = 2          # logprobs stays "strip", max_tokens 4096
```

is `DISTILLGUARD_GATEWAY__UPSTREAM=...`, `DISTILLGUARD_GATEWAY__STORE=...` and
`DISTILLGUARD_GATEWAY__OUTPUT__WATCH__MAX_N=2`. Lists are JSON in a variable
(`DISTILLGUARD_GATEWAY__TRUSTED_PROXIES='["10.0.0.0/8"]'`). Secrets (tokens, keys) are
best given as variables, never committed in a file.

This page is generated: `distillguard config reference > docs/configuration.md`.
"""


def reference() -> str:
    """The whole page, in Markdown."""
    parts, top = [HEADER], []
    for name, field in config.Settings.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            parts.append(_section(name, kind, field.default))
        else:
            top.append(_row((name,), field.default, field.description or "", field.default_factory))
    parts.append(_table("Other settings", "", top))
    return "\n".join(parts)


def _section(name: str, model: type[BaseModel], default: BaseModel) -> str:
    about = inspect.cleandoc(model.__doc__ or "")
    return _table(f"`[{name}]`", about, list(_rows(model, default, (name,))))


def _table(title: str, about: str, rows: list[tuple[str, str, str, str]]) -> str:
    lines = [f"## {title}", ""]
    if about:
        lines += [about, ""]
    lines += ["| setting | default | environment variable | what it does |", "|---|---|---|---|"]
    lines += [f"| `{n}` | {d} | `{e}` | {w} |" for n, d, e, w in rows]
    return "\n".join(lines) + "\n"


def _rows(
    model: type[BaseModel], value: Any, path: tuple[str, ...]
) -> Iterator[tuple[str, str, str, str]]:
    """(dotted name, default, variable, description) of every leaf setting under `model`,
    with the defaults of `value` (the parent's default instance: a tier's own rule)."""
    for name, field in model.model_fields.items():
        here = (*path, name)
        default = getattr(value, name) if value is not None else field.default
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            yield from _rows(kind, default, here)
        elif kind is Limits:
            for limit in dataclasses.fields(Limits):
                row = _row(
                    (*here, limit.name), getattr(default, limit.name), LIMIT_WORDS[limit.name]
                )
                yield (row[0], "none" if row[1] == "unset" else row[1], *row[2:])
        else:
            yield _row(here, default, field.description or "", field.default_factory)


def _row(
    path: tuple[str, ...], default: Any, about: str, factory: Any = None
) -> tuple[str, str, str, str]:
    variable = "DISTILLGUARD_" + "__".join(part.upper() for part in path)
    return ".".join(path), _shown(default, factory), variable, " ".join(about.split())


def _shown(default: Any, factory: Any) -> str:
    """A default as a reader needs it: machine-specific ones in words."""
    if factory is not None:
        return "per user (the platform's cache directory)"
    if default is None or isinstance(default, SecretStr):
        return "unset"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, str):
        return f'`"{default}"`'
    if isinstance(default, int) and abs(default) >= 10_000:
        return f"`{default:_}`"
    return f"`{default}`"
