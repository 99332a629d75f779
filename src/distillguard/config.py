"""One Settings object, read from a TOML file and the environment.

Precedence (highest first): explicit arguments, ``DISTILLGUARD_*`` environment
variables (nested with ``__``, e.g. ``DISTILLGUARD_WATERMARK__GAMMA=0.5``), the
TOML file named by ``DISTILLGUARD_CONFIG`` (else ``./distillguard.toml`` if it
exists), then the embedded defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from distillguard.errors import DistillguardError

CONFIG_ENV = "DISTILLGUARD_CONFIG"
DEFAULT_CONFIG_FILE = Path("distillguard.toml")


class WatermarkSettings(BaseModel):
    """Defaults for new keys; a key file's own parameters always win at detection."""

    scheme: Literal["kgw", "gumbel"] = "kgw"
    gamma: float = Field(0.25, gt=0.0, lt=1.0)
    delta: float = Field(2.0, ge=0.0)
    context_width: int = Field(1, ge=0, le=8)


class GenerationSettings(BaseModel):
    """Sampling defaults: the OpenAI API's own (temperature 1, top_p 1), which clients expect."""

    max_new_tokens: int = Field(200, ge=1, le=4096)
    temperature: float = Field(1.0, gt=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    batch_size: int = Field(16, ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DISTILLGUARD_", env_nested_delimiter="__", extra="forbid"
    )

    cache_dir: Path = Field(default_factory=lambda: platformdirs.user_cache_path("distillguard"))
    watermark: WatermarkSettings = WatermarkSettings()
    generation: GenerationSettings = GenerationSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = config_path()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


def config_path() -> Path | None:
    named = os.environ.get(CONFIG_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise DistillguardError(f"{CONFIG_ENV} names {path}, which is not a file")
        return path
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def load_settings(**overrides: object) -> Settings:
    """Settings with a one-line error for a bad file or variable (never a traceback)."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        raise DistillguardError(f"invalid setting {where}: {first['msg']}") from None
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML
        raise DistillguardError(f"cannot read configuration: {exc}") from None
