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
from pydantic import (
    BaseModel,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from distillguard.errors import DistillguardError
from distillguard.policy import Limits

CONFIG_ENV = "DISTILLGUARD_CONFIG"
DEFAULT_CONFIG_FILE = Path("distillguard.toml")


class WatermarkSettings(BaseModel):
    """Defaults for new keys; a key file's own parameters always win at detection."""

    scheme: Literal["kgw", "gumbel"] = "kgw"
    gamma: float = Field(0.25, gt=0.0, lt=1.0)
    delta: float = Field(2.0, ge=0.0)
    context_width: int = Field(2, ge=0, le=8)


class GenerationSettings(BaseModel):
    """Sampling defaults: the OpenAI API's own (temperature 1, top_p 1), which clients expect."""

    max_new_tokens: int = Field(200, ge=1, le=4096)
    temperature: float = Field(1.0, gt=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    batch_size: int = Field(16, ge=1)


class TierSettings(BaseModel):
    """Limit multipliers per risk tier; `block` always refuses (403)."""

    normal: float = Field(1.0, gt=0.0)
    watch: float = Field(1.0, gt=0.0)  # observed closely (events flagged), not slowed
    throttle: float = Field(0.1, gt=0.0)


class OutputRule(BaseModel):
    """What one tier may take beyond the answer's text. Log-probabilities are the logit
    channel: a student learns far more from a distribution than from one sample, and an
    engine reports them from the logits before any watermark (vLLM's raw logprobs), so
    they carry no mark. `n` samples per prompt and long answers multiply the take."""

    logprobs: Literal["allow", "strip", "refuse"] = "allow"
    max_n: int | None = Field(None, ge=1)  # more samples per request: a 400
    max_tokens: int | None = Field(None, ge=1)  # longer requested (or unset): lowered to this


class OutputSettings(BaseModel):
    """Output rules per tier (`block` refuses everything already)."""

    normal: OutputRule = OutputRule()
    watch: OutputRule = OutputRule(logprobs="strip", max_n=4, max_tokens=4096)
    throttle: OutputRule = OutputRule(logprobs="refuse", max_n=1, max_tokens=1024)


class LimitDefaults(BaseModel):
    """Limits for keys, accounts and organisations that set none of their own."""

    key: Limits = Limits(rpm=600, tpm=200_000, tpd=None, concurrency=32)
    account: Limits = Limits(rpm=1_200, tpm=400_000, tpd=20_000_000, concurrency=64)
    org: Limits = Limits(rpm=6_000, tpm=2_000_000, tpd=100_000_000, concurrency=256)


class GatewaySettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    upstream: str | None = None  # base URL of an OpenAI-compatible API, e.g. http://host/v1
    upstream_api_key: SecretStr | None = None  # sent upstream instead of the client's key
    upstream_timeout: float = Field(60.0, gt=0.0)  # seconds for a whole non-streamed answer
    # The upstream is vLLM with distillguard's plug-in (engine/vllm_plugin.py): every request
    # tells it the account's cohort, so its answers carry that cohort's watermark.
    upstream_watermark: bool = False
    engine: Literal["bundled"] | None = None
    watermark_key: Path | None = None
    store: str | None = None  # database URL; default: SQLite in the user data directory
    redis: str | None = None  # shared limits across replicas; default: in-process limits
    shadow: bool = False  # evaluate and log limit/policy decisions, enforce none
    admin_token: SecretStr | None = None  # Bearer token for /admin; admin API off when unset

    @field_validator("admin_token")
    @classmethod
    def _long_admin_token(cls, token: SecretStr | None) -> SecretStr | None:
        """The admin API issues and revokes keys: its token must not be guessable."""
        if token is not None and len(token.get_secret_value()) < 32:
            raise ValueError(
                "must be at least 32 characters "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return token

    max_body_bytes: int = Field(1 << 20, ge=1024)
    max_tokens_cap: int = Field(4_096, ge=1)  # reserved when a request sets no max_tokens
    cohorts: int = Field(64, ge=1)  # watermark sub-keys: cohort = HMAC(account) mod cohorts
    key_refresh_seconds: float = Field(2.0, gt=0.0)  # how fast revocations reach replicas
    event_queue_size: int = Field(10_000, ge=1)
    # The queue's bound in bytes too: events carry bodies, and a stalled store must not
    # turn into memory growth an outsider can drive.
    event_queue_bytes: int = Field(64 << 20, ge=1 << 20)
    event_batch_size: int = Field(500, ge=1)
    # Unauthenticated requests cost nothing to send: at most this many a second are stored
    # (the rest counted in the next stored one and in a metric).
    unauthenticated_events_per_second: float = Field(10.0, ge=0.0)
    max_header_bytes: int = Field(16 << 10, ge=1024)  # all request headers together; else 431
    # Redis unreachable: refuse with 503 (default) or admit under in-process limits.
    limiter_fail_open: bool = False
    # A stream is cut (an error event) after this long, so it never outlives its lease.
    max_stream_seconds: float = Field(600.0, gt=0.0)
    shutdown_grace_seconds: float = Field(30.0, ge=0.0)  # SIGTERM: open requests may finish
    # Peers (addresses or CIDR ranges) whose X-Forwarded-For is believed; none by default.
    trusted_proxies: list[IPvAnyNetwork] = []
    limits: LimitDefaults = LimitDefaults()
    tiers: TierSettings = TierSettings()
    output: OutputSettings = OutputSettings()


class TierThresholds(BaseModel):
    """A risk score in [0, 1] -> the gateway tier it earns (tiers are only ever raised)."""

    watch_at: float = Field(0.3, ge=0.0, le=1.0)
    throttle_at: float = Field(0.5, ge=0.0, le=1.0)  # the flag threshold
    block_at: float | None = Field(None, ge=0.0, le=1.0)  # None: never blocks alone

    @model_validator(mode="after")
    def _ordered(self) -> TierThresholds:
        top = self.block_at if self.block_at is not None else 1.0
        if not self.watch_at <= self.throttle_at <= top:
            raise ValueError("needs watch_at <= throttle_at <= block_at")
        return self

    def tier_for(self, score: float) -> str | None:
        """The tier a score earns; None for `normal`."""
        if self.block_at is not None and score >= self.block_at:
            return "block"
        if score >= self.throttle_at:
            return "throttle"
        if score >= self.watch_at:
            return "watch"
        return None


class TracingSettings(TierThresholds):
    """How `trace run --apply-tiers` turns scores into gateway risk tiers (it only raises them)."""

    online: bool = True  # the gateway scores accounts as their events are written


class ExchangeSettings(TierThresholds):
    """The exchange client: where the hub is, who we are, and what a shared indicator that
    matches one of our accounts does to its tier (scored by its decayed confidence)."""

    hub: str | None = None  # the hub's API root, e.g. http://hub.example:9400/api/
    collection: str | None = None  # a collection's id or title at the hub
    token: SecretStr | None = None  # this member's hub token (`hub member add` prints it)
    keyring: Path | None = None  # the consortium key file (`exchange keygen`)
    publisher: str | None = None  # our name in published objects (the STIX identity)
    tlp: Literal["clear", "green", "amber", "amber+strict", "red"] = "amber"
    allow_ip: bool = False  # IP addresses and CIDRs may be personal data: off unless allowed
    valid_days: int = Field(90, ge=1)  # how long what we publish stays valid
    # MISP-style decay of a shared indicator's confidence (docs/exchange.md):
    # base x (1 - (age / lifetime) ** (1 / decay_speed)), age since its last report.
    lifetime_days: float = Field(180.0, gt=0.0)
    decay_speed: float = Field(0.5, gt=0.0)
    throttle_at: float = Field(0.6, ge=0.0, le=1.0)  # one member's word is not enough alone


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DISTILLGUARD_", env_nested_delimiter="__", extra="forbid"
    )

    cache_dir: Path = Field(default_factory=lambda: platformdirs.user_cache_path("distillguard"))
    watermark: WatermarkSettings = WatermarkSettings()
    generation: GenerationSettings = GenerationSettings()
    gateway: GatewaySettings = GatewaySettings()
    tracing: TracingSettings = TracingSettings()
    exchange: ExchangeSettings = ExchangeSettings()

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
