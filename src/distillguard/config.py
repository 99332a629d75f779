"""One Settings object, read from a TOML file and the environment.

Precedence (highest first): explicit arguments, ``DISTILLGUARD_*`` environment
variables (nested with ``__``, e.g. ``DISTILLGUARD_WATERMARK__GAMMA=0.5``), the
TOML file named by ``DISTILLGUARD_CONFIG`` (else ``./distillguard.toml`` if it
exists), then the embedded defaults below.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import (
    BaseModel,
    ConfigDict,
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


class _Described(BaseModel):
    """Settings whose attribute docstrings are their descriptions (the configuration
    reference, docs/configuration.md, is built from them)."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    @model_validator(mode="before")
    @classmethod
    def _over_defaults(cls, data: Any) -> Any:
        """A partial table changes only what it names. `[gateway.output.watch] max_n = 2`
        keeps the watch rule's other defaults (strip log-probabilities, 4,096 tokens), and
        `..._LIMITS__KEY__RPM=5` the key's other limits, instead of resetting them to the
        class's (allow, unlimited)."""
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, field in cls.model_fields.items():
            given, default = data.get(name), field.default
            if not isinstance(given, dict):
                continue
            if isinstance(default, BaseModel):
                merged[name] = _deep_merge(default.model_dump(), given)
            elif dataclasses.is_dataclass(default) and not isinstance(default, type):
                merged[name] = _deep_merge(dataclasses.asdict(default), given)
        return merged


def _deep_merge(base: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in given.items():
        below = merged.get(key)
        both = isinstance(value, dict) and isinstance(below, dict)
        merged[key] = _deep_merge(below, value) if both else value
    return merged


class WatermarkSettings(_Described):
    """Defaults for new keys; a key file's own parameters always win at detection."""

    scheme: Literal["kgw", "gumbel"] = "kgw"
    """KGW (green lists, marks greedy answers too) or Gumbel (distortion-free sampling)."""
    gamma: float = Field(0.25, gt=0.0, lt=1.0)
    """KGW: the share of the vocabulary that is green at each step."""
    delta: float = Field(2.0, ge=0.0)
    """KGW: the logit bias added to green tokens."""
    context_width: int = Field(2, ge=0, le=8)
    """Preceding tokens that seed each step's green list (or Gumbel noise)."""


class GenerationSettings(_Described):
    """Sampling defaults: the OpenAI API's own (temperature 1, top_p 1), which clients expect."""

    max_new_tokens: int = Field(200, ge=1, le=4096)
    """Answer tokens when a request (or `generate`) sets no limit."""
    temperature: float = Field(1.0, gt=0.0)
    """Sampling temperature when a request sets none."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling when a request sets none."""
    batch_size: int = Field(16, ge=1)
    """Requests the bundled engine generates together in one batch."""


class TierSettings(_Described):
    """Limit multipliers per risk tier; `block` always refuses (403)."""

    normal: float = Field(1.0, gt=0.0)
    """Every limit of a `normal` account is multiplied by this."""
    watch: float = Field(1.0, gt=0.0)
    """... of a `watch` account: observed closely (events flagged), not slowed."""
    throttle: float = Field(0.1, gt=0.0)
    """... of a `throttle` account."""


class OutputRule(_Described):
    """What one tier may take beyond the answer's text. Log-probabilities are the logit
    channel: a student learns far more from a distribution than from one sample, and an
    engine reports them from the logits before any watermark (vLLM's raw logprobs), so
    they carry no mark. `n` samples per prompt and long answers multiply the take."""

    logprobs: Literal["allow", "strip", "refuse"] = "allow"
    """Log-probabilities asked for: passed on, removed from the request, or a 400."""
    max_n: int | None = Field(None, ge=1)
    """More samples per request than this: a 400 naming `n` (unset: any)."""
    max_tokens: int | None = Field(None, ge=1)
    """A longer (or unset) `max_tokens` is lowered to this (unset: as asked)."""


class OutputSettings(_Described):
    """Output rules per tier (`block` refuses everything already)."""

    normal: OutputRule = OutputRule()
    """For `normal` accounts."""
    watch: OutputRule = OutputRule(logprobs="strip", max_n=4, max_tokens=4096)
    """For `watch` accounts."""
    throttle: OutputRule = OutputRule(logprobs="refuse", max_n=1, max_tokens=1024)
    """For `throttle` accounts."""


class LimitDefaults(_Described):
    """Limits for keys, accounts and organisations that set none of their own."""

    key: Limits = Limits(rpm=600, tpm=200_000, tpd=None, concurrency=32)
    """Per API key."""
    account: Limits = Limits(rpm=1_200, tpm=400_000, tpd=20_000_000, concurrency=64)
    """Per account (all its keys together)."""
    org: Limits = Limits(rpm=6_000, tpm=2_000_000, tpd=100_000_000, concurrency=256)
    """Per organisation (all its accounts together)."""


class GatewaySettings(_Described):
    """`distillguard serve`: what it listens on, what it serves, and how it limits."""

    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = Field(8000, ge=0, le=65535)
    """Port to listen on."""
    upstream: str | None = None
    """Base URL of an OpenAI-compatible API to protect, e.g. http://host/v1."""
    upstream_api_key: SecretStr | None = None
    """Sent upstream instead of the client's key."""
    upstream_timeout: float = Field(60.0, gt=0.0)
    """Seconds for a whole non-streamed answer from the upstream."""
    upstream_watermark: bool = False
    """The upstream is vLLM with distillguard's plug-in: each request names the account's
    cohort, so its answers carry that cohort's watermark."""
    engine: Literal["bundled"] | None = None
    """Serve the bundled model; beside an upstream, requests naming the bundled model are
    answered here and every other model is proxied."""
    watermark_key: Path | None = None
    """The master watermark key file (cohort sub-keys are derived from it)."""
    store: str | None = None
    """Database URL (SQLite or PostgreSQL); unset: SQLite in the user data directory."""
    redis: str | None = None
    """Redis URL for limits shared exactly across replicas; unset: in-process limits."""
    shadow: bool = False
    """Evaluate and log limit and policy decisions, enforce none."""
    admin_token: SecretStr | None = None
    """Bearer token for /admin and /metrics (32+ characters); unset: admin API off."""

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
    """Largest request body; larger is a 413."""
    max_tokens_cap: int = Field(4_096, ge=1)
    """Tokens reserved for the answer when a request sets no max_tokens."""
    cohorts: int = Field(64, ge=1)
    """Watermark cohorts: an account's cohort is HMAC(account) mod this."""
    key_refresh_seconds: float = Field(2.0, gt=0.0)
    """How often keys and tiers are re-read: how fast revocations reach every replica."""
    event_queue_size: int = Field(10_000, ge=1)
    """Events waiting for the writer, at most."""
    event_queue_bytes: int = Field(64 << 20, ge=1 << 20)
    """... and their bytes at most: events carry bodies, and a stalled store must not turn
    into memory growth an outsider can drive."""
    event_batch_size: int = Field(500, ge=1)
    """Events written to the store in one transaction."""
    unauthenticated_events_per_second: float = Field(10.0, ge=0.0)
    """Unauthenticated requests cost nothing to send: at most this many a second are stored
    (the rest counted in the next stored one and in a metric)."""
    max_header_bytes: int = Field(16 << 10, ge=1024)
    """All request headers together, at most; more is a 431."""
    limiter_fail_open: bool = False
    """Redis unreachable: admit under in-process limits instead of refusing with 503."""
    max_stream_seconds: float = Field(600.0, gt=0.0)
    """A stream is cut (an error event) after this long, so it never outlives its lease."""
    shutdown_grace_seconds: float = Field(30.0, ge=0.0)
    """On SIGTERM, open requests may finish for this long."""
    trusted_proxies: list[IPvAnyNetwork] = []
    """Peers (addresses or CIDR ranges) whose X-Forwarded-For is believed."""
    limits: LimitDefaults = LimitDefaults()
    """Limits for keys, accounts and organisations that set none of their own."""
    tiers: TierSettings = TierSettings()
    """Limit multipliers per risk tier."""
    output: OutputSettings = OutputSettings()
    """What each tier may take beyond the answer's text."""


class TierThresholds(_Described):
    """A risk score in [0, 1] -> the gateway tier it earns (tiers are only ever raised)."""

    watch_at: float = Field(0.3, ge=0.0, le=1.0)
    """A score this high earns `watch`."""
    throttle_at: float = Field(0.5, ge=0.0, le=1.0)
    """A score this high earns `throttle` (tracing: the flag threshold)."""
    block_at: float | None = Field(None, ge=0.0, le=1.0)
    """A score this high earns `block`; unset: never blocks alone."""

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

    online: bool = True
    """The gateway scores accounts as their events are written (online tracing)."""


class ExchangeSettings(TierThresholds):
    """The exchange client: where the hub is, who we are, and what a shared indicator that
    matches one of our accounts does to its tier (scored by its decayed confidence)."""

    hub: str | None = None
    """The hub's API root, e.g. http://hub.example:9400/api/."""
    collection: str | None = None
    """A collection's id or title at the hub."""
    token: SecretStr | None = None
    """This member's hub token (`hub member add` prints it)."""
    keyring: Path | None = None
    """The consortium key file (`exchange keygen`)."""
    publisher: str | None = None
    """Our name in published objects (the STIX identity)."""
    tlp: Literal["clear", "green", "amber", "amber+strict", "red"] = "amber"
    """The TLP marking of what we publish."""
    allow_ip: bool = False
    """Publish IP addresses and CIDRs (they may be personal data)."""
    valid_days: int = Field(90, ge=1)
    """How long what we publish stays valid."""
    lifetime_days: float = Field(180.0, gt=0.0)
    """A shared indicator's confidence decays to 0 over this long since its last report:
    base x (1 - (age / lifetime) ** (1 / decay_speed)), MISP-style."""
    decay_speed: float = Field(0.5, gt=0.0)
    """The decay's shape (below 1: slow at first, then fast)."""
    throttle_at: float = Field(0.6, ge=0.0, le=1.0)
    """A match this confident earns `throttle`: one member's word is not enough alone."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DISTILLGUARD_",
        env_nested_delimiter="__",
        extra="forbid",
        use_attribute_docstrings=True,
    )

    cache_dir: Path = Field(default_factory=lambda: platformdirs.user_cache_path("distillguard"))
    """Converted models and other caches."""
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
