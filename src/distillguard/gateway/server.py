"""Assembling a gateway from settings, and running it with uvicorn."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import logging.config
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs
from starlette.applications import Starlette

from distillguard.config import Settings, load_settings
from distillguard.errors import DistillguardError, KeyFileError
from distillguard.exchange import privacy
from distillguard.exchange.watchlist import Watchlist
from distillguard.gateway.admin import EXCEPTION_HANDLERS, AdminApi
from distillguard.gateway.app import Gateway, create_app
from distillguard.gateway.auth import KeyRing
from distillguard.gateway.backends.upstream import UpstreamBackend, UpstreamClient
from distillguard.gateway.console import Console
from distillguard.gateway.events import EventSink
from distillguard.gateway.http import HotPath
from distillguard.gateway.limits import Limiter, MemoryLimiter, RedisLimiter
from distillguard.gateway.logs import log_config
from distillguard.gateway.openapi import openapi_route
from distillguard.gateway.tokens import TokenCounter
from distillguard.store import AccountStore, Event, EventStore, default_store_url, open_engine
from distillguard.store.database import masked_url
from distillguard.watermark import WatermarkKey
from distillguard.watermark.cohorts import Cohorts

if TYPE_CHECKING:
    from distillguard.gateway.backends.base import Backend
    from distillguard.tracing.online import OnlineTracer

log = logging.getLogger("distillguard.gateway")
SHARED_REFRESH_SECONDS = 300.0
SHUTDOWN_DRAIN_SECONDS = 10.0  # cancelled requests get this long to settle and record themselves
GATEWAY_ENV = "DISTILLGUARD_GATEWAY"  # the whole gateway section, as JSON, for worker processes


def default_watermark_key_path() -> Path:
    return platformdirs.user_data_path("distillguard") / "watermark-key.json"


def watermark_key(path: Path | None) -> WatermarkKey:
    """The configured key; without one, the embedded default key (created on first use).

    Workers starting together race to create it: the save is exclusive, so exactly one
    key is written and every process loads that one.
    """
    if path is not None:
        return WatermarkKey.load(path)
    path = default_watermark_key_path()
    if not path.exists():
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise KeyFileError(f"cannot create {path.parent}: {exc.strerror}") from None
        try:
            WatermarkKey.generate().save(path)
            log.warning("created a watermark key at %s: back it up, detection needs it", path)
        except KeyFileError:
            if not path.exists():  # the save itself failed, not a race another process won
                raise
    return WatermarkKey.load(path)


def build(settings: Settings) -> HotPath:
    config = settings.gateway
    if config.upstream is None and config.engine is None:
        raise DistillguardError("serve needs --upstream URL, --engine bundled, or both")
    if config.upstream_watermark and (config.upstream is None or config.watermark_key is None):
        raise DistillguardError(
            "gateway.upstream_watermark needs --upstream URL and gateway.watermark_key "
            "(the master key the upstream's plug-in reads too)"
        )
    engine = open_engine(config.store or default_store_url())
    accounts = AccountStore(engine)
    keys = KeyRing(accounts, config.key_refresh_seconds)
    limiter: Limiter = RedisLimiter(config.redis) if config.redis else MemoryLimiter()
    watchlist = None
    if settings.exchange.keyring is not None:  # account identifiers are hashed with it
        ring = privacy.KeyRing.load(settings.exchange.keyring)
        watchlist = Watchlist(engine, ring, settings.exchange)
    observers = []
    if settings.tracing.online:  # scores accounts off the request path, on the writer thread
        from distillguard.tracing.online import OnlineTracer

        tracer = OnlineTracer(accounts, settings.tracing, config.shadow)
        if watchlist is not None:
            observers.append(_SharedTemplatesRefresh(tracer, watchlist))
        observers.append(tracer.observe)
    sink = EventSink(
        EventStore(engine),
        config.event_queue_size,
        config.event_batch_size,
        observers=observers,
        max_bytes=config.event_queue_bytes,
    )
    counter = TokenCounter.bundled(settings.cache_dir)
    cohorts = None
    models = None
    backend: Backend | None = None
    if config.upstream is not None:
        if config.watermark_key is not None:  # cohorts are recorded for later attribution
            cohorts = Cohorts(watermark_key(config.watermark_key), config.cohorts)
        secret = config.upstream_api_key.get_secret_value() if config.upstream_api_key else None
        client = UpstreamClient(config.upstream, secret, config.upstream_timeout)
        backend = UpstreamBackend(client, marks_cohorts=config.upstream_watermark)
    if config.engine == "bundled":
        from distillguard.engine.transformers_engine import TransformersEngine
        from distillguard.gateway.backends.bundled import BundledBackend

        cohorts = Cohorts(watermark_key(config.watermark_key), config.cohorts)
        bundled = BundledBackend(
            TransformersEngine.bundled(settings.cache_dir), cohorts, settings.generation
        )
        if backend is None:
            backend, models = bundled, bundled.models_served
        else:  # the bundled model by its name, every other model upstream
            from distillguard.gateway.backends.routed import RoutedBackend

            backend = RoutedBackend(bundled, backend)
    assert backend is not None
    gateway = Gateway(config, keys, limiter, backend, counter, sink, cohorts, models)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await keys.start()
        sink.start()
        # Everything loaded so far lives as long as the process: move it out of the
        # collector's sight, or each full collection walks it all (tens of ms, a p99 spike).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            # Requests the server cancelled at its deadline settle and record themselves
            # (shielded); the limiter and the sink must outlive that.
            await gateway.drain(SHUTDOWN_DRAIN_SECONDS)
            await keys.close()
            await backend.close()
            await limiter.close()
            sink.close()  # drains the queue: no event lost on a graceful shutdown
            engine.dispose()

    token = config.admin_token.get_secret_value() if config.admin_token else None
    routes = [
        *AdminApi(accounts, keys, token, watchlist, gateway.trusted_proxies).routes(),
        *Console(engine, keys, token, gateway.trusted_proxies).routes(),
        openapi_route(),
    ]
    return create_app(gateway, lifespan, routes, token, EXCEPTION_HANDLERS)


class _SharedTemplatesRefresh:
    """Keeps the online tracer's shared templates as fresh as the watchlist (which
    `exchange pull` fills from another process): re-read every SHARED_REFRESH_SECONDS,
    on the event writer's thread, never on the request path."""

    def __init__(self, tracer: OnlineTracer, watchlist: Watchlist) -> None:
        self.tracer, self.watchlist = tracer, watchlist
        self.read_at = -math.inf

    def __call__(self, batch: Sequence[Event]) -> None:
        now = time.monotonic()
        if now - self.read_at >= SHARED_REFRESH_SECONDS:
            self.read_at = now
            self.tracer.shared = self.watchlist.shared_templates()


def app_from_environment() -> HotPath:
    """uvicorn's factory in each worker process: the settings `serve` left in the environment."""
    return build(load_settings())


def serve(
    settings: Settings, workers: int = 1, access_log: bool = False, json_logs: bool = False
) -> None:
    """Run the gateway; with `workers` > 1, that many processes share the port (and Redis).
    Logs go to stderr, as text or JSON lines; `access_log` adds a line per request (the
    event log records every request either way)."""
    import uvicorn

    logging_config = log_config(json_logs, access_log)
    logging.config.dictConfig(logging_config)
    options = dict(
        host=settings.gateway.host,
        port=settings.gateway.port,
        log_config=logging_config,
        access_log=access_log,
        timeout_graceful_shutdown=settings.gateway.shutdown_grace_seconds,
        # X-Forwarded-For is read by the gateway itself, only from gateway.trusted_proxies.
        proxy_headers=False,
    )
    if workers == 1:
        app = build(settings)
        log.info("%s", startup_line(settings, workers))
        uvicorn.run(app, **options)
        return
    if not settings.gateway.redis:
        raise DistillguardError(
            "--workers above 1 needs --redis URL: in-process limits would be per worker, "
            "so every limit would multiply by the number of workers"
        )
    # Workers are fresh processes: they rebuild the settings from the environment,
    # where the whole gateway section (command-line overrides included) now is.
    os.environ[GATEWAY_ENV] = _gateway_json(settings)
    log.info("%s", startup_line(settings, workers))
    uvicorn.run(f"{__name__}:app_from_environment", factory=True, workers=workers, **options)


def startup_line(settings: Settings, workers: int) -> str:
    """What is being served, from where, with what: the line an operator reads first."""
    config = settings.gateway
    if config.engine == "bundled" and config.upstream:
        backend = (
            f"the bundled model, watermarked ({config.cohorts} cohorts), "
            f"other models from upstream {config.upstream}"
        )
    elif config.engine == "bundled":
        backend = f"the bundled model, watermarked ({config.cohorts} cohorts)"
    elif config.upstream_watermark:
        backend = f"upstream {config.upstream}, watermarked there per cohort (plug-in)"
    else:
        backend = f"upstream {config.upstream}, answers not watermarked"
    limiter = f"limits in Redis {masked_url(config.redis)}" if config.redis else "in-process limits"
    parts = [
        f"serving http://{config.host}:{config.port}/v1",
        backend,
        f"store {masked_url(config.store or default_store_url())}",
        limiter,
        f"online tracing {'on' if settings.tracing.online else 'off'}",
        f"admin API {'on' if config.admin_token else 'off'}",
    ]
    if config.shadow:
        parts.append("SHADOW MODE: decisions logged, none enforced")
    if workers > 1:
        parts.append(f"{workers} workers")
    return "; ".join(parts)


def _gateway_json(settings: Settings) -> str:
    data = json.loads(settings.gateway.model_dump_json())
    for name in ("upstream_api_key", "admin_token"):  # dumped masked; the workers need them
        secret = getattr(settings.gateway, name)
        data[name] = secret.get_secret_value() if secret is not None else None
    return json.dumps(data)
