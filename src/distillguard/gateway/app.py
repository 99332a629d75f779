"""The ASGI app: OpenAI's endpoints, each request read top to bottom in `Gateway.handle`.

auth → policy (tier) → model check → token count → limits (one atomic admit)
→ backend (whole or streamed answer) → settle the reservation → one event.
Every failure on the way is an `ApiError`, answered in OpenAI's shape.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ExceptionHandler

from distillguard import metrics
from distillguard.config import GatewaySettings
from distillguard.gateway import http, output, protocol, quota
from distillguard.gateway.auth import KeyRing, bearer_matches
from distillguard.gateway.backends.base import Backend, Reply
from distillguard.gateway.clients import client_address, trusted_networks
from distillguard.gateway.errors import ApiError
from distillguard.gateway.events import EventSampler, EventSink, Trace, body_summary
from distillguard.gateway.http import HotPath, error_response, read_body
from distillguard.gateway.limits import Decision, Limiter, LimiterUnavailable, MemoryLimiter
from distillguard.gateway.streaming import STREAM_OUTCOMES, EventStream, StreamRelay
from distillguard.gateway.throttled_log import ThrottledLog
from distillguard.gateway.tokens import TokenCounter
from distillguard.store import Event, KeyRecord
from distillguard.watermark.cohorts import Cohorts

log = logging.getLogger(__name__)
limiter_log = ThrottledLog(log)  # an outage fails every request alike: report it, not each
LEASE_SLACK = 60.0  # a lease outlives the longest stream by this much, so it never lapses first


class Gateway:
    def __init__(
        self,
        settings: GatewaySettings,
        keys: KeyRing,
        limiter: Limiter,
        backend: Backend,
        counter: TokenCounter,
        sink: EventSink,
        cohorts: Cohorts | None = None,
        models: set[str] | None = None,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.limiter = limiter
        self.backend = backend
        self.counter = counter
        self.sink = sink
        self.cohorts = cohorts
        self.models = models  # None: the backend decides which models exist
        self.max_stream_seconds = settings.max_stream_seconds
        self.lease_ttl = max(settings.max_stream_seconds, 2 * settings.upstream_timeout)
        self.lease_ttl += LEASE_SLACK
        # Limits without Redis, for `limiter_fail_open`: per process, but limits all the same.
        self.fallback = MemoryLimiter() if settings.limiter_fail_open else None
        self.trusted_proxies = trusted_networks(settings.trusted_proxies)
        self.unauthenticated = EventSampler(settings.unauthenticated_events_per_second)
        self._open = 0  # admitted requests not yet settled and recorded
        self._idle = asyncio.Event()
        self._idle.set()

    # -- the hot path ---------------------------------------------------------------

    async def handle(self, request: Request, endpoint: str, kind: type[protocol.Request]) -> Any:
        trace = Trace(endpoint)
        event = trace.begin(request, self._client_ip(request))
        try:
            # Authenticate first: an anonymous caller costs no parsing and learns nothing.
            record = self.keys.authenticate(request.headers.get("authorization"))
            self._identify(event, record)
            body = trace.body = await read_body(request, self.settings.max_body_bytes)
            typed, raw = protocol.parse(body, kind)
            event.model, event.request = typed.model, raw
            event.stream = bool(getattr(typed, "stream", False))
            self._check_policy(record, event)
            self._check_model(typed.model)
            raw = self._shape_output(record, raw, typed)
            plan = self._plan(record, typed)
            event.prompt_tokens = plan.prompt_tokens
            decision, limiter = await self._admit(plan.quota, event)
            limit_headers = self._admission(plan.quota, decision, event)
        except ApiError as exc:
            self._refused(trace, exc)
            return error_response(exc, trace.request_id)
        admitted = Admitted(self, limiter, trace, plan, decision, limit_headers)
        self._open += 1
        self._idle.clear()
        if event.stream:
            return await admitted.stream(endpoint, raw, typed)
        return await admitted.complete(endpoint, raw)

    def _client_ip(self, request: Request) -> str | None:
        peer = request.client.host if request.client else None
        if not self.trusted_proxies:
            return peer
        return client_address(peer, request.headers.get("x-forwarded-for"), self.trusted_proxies)

    def _refused(self, trace: Trace, exc: ApiError) -> None:
        """Record a request answered with an error. What a refused caller sent was never
        served, so the event keeps a bounded summary of it; anonymous callers are sampled."""
        event = trace.event
        assert event is not None
        message = exc.message
        if event.request is not None:
            event.request = body_summary(trace.body)
        if event.account_id is None:
            skipped = self.unauthenticated.take()
            if skipped is None:
                trace.finish(exc.status, message)  # counted in the metrics, not stored
                metrics.EVENTS_SAMPLED_OUT.inc()
                return
            if skipped:
                message += f" (and {skipped} unauthenticated requests not stored)"
        self.sink.emit(trace.finish(exc.status, message), trace.size)

    async def _admit(self, plan: quota.Quota, event: Event) -> tuple[Decision, Limiter]:
        """One atomic admit; when the limiter's store is down, a 503 (or the fallback)."""
        try:
            decision = await self.limiter.admit(plan.charges, plan.slots, lease_ttl=self.lease_ttl)
            return decision, self.limiter
        except LimiterUnavailable as exc:
            metrics.LIMITER_ERRORS.inc()
            if self.fallback is None:
                limiter_log.error("rate limiter unavailable; answering 503: %s", exc)
                event.decision = "error"
                raise ApiError(
                    503,
                    "rate limiting is unavailable for a moment; retry shortly",
                    "limiter_unavailable",
                    headers={"retry-after": "1"},
                ) from None
            limiter_log.error("rate limiter unavailable; admitting under local limits: %s", exc)
        decision = await self.fallback.admit(plan.charges, plan.slots, lease_ttl=self.lease_ttl)
        return decision, self.fallback

    def request_ended(self) -> None:
        """An admitted request is settled and recorded (`drain` waits for all of them)."""
        self._open -= 1
        if not self._open:
            self._idle.set()

    async def drain(self, timeout: float) -> int:
        """Wait until every admitted request is settled and recorded (graceful shutdown:
        before the limiter and the event sink close); the number still open after `timeout`."""
        with anyio.move_on_after(timeout):
            await self._idle.wait()
        if self._open:
            log.error("%d requests still open at shutdown; their events may be lost", self._open)
        return self._open

    def _identify(self, event: Event, record: KeyRecord) -> None:
        event.account_id, event.org_id, event.key_id = (
            record.account_id,
            record.org_id,
            record.key_id,
        )
        event.tier = record.tier
        if self.cohorts is not None:
            event.cohort = self.cohorts.of(record.account_id)

    def _check_policy(self, record: KeyRecord, event: Event) -> None:
        if record.tier != "block":
            return
        event.decision, event.refused_by = "blocked", "tier:block"
        if self.settings.shadow:
            event.shadow = True
            return
        raise ApiError(
            403,
            f"account {record.account_id!r} is blocked by the provider's usage policy",
            "account_blocked",
        )

    def _shape_output(
        self, record: KeyRecord, raw: dict[str, Any], typed: protocol.Request
    ) -> dict[str, Any]:
        """The tier's output rule (logprobs, n, max_tokens); shadow mode enforces none.
        Behind the watermarking plug-in, requests the engine could not mark are refused."""
        if self.settings.upstream_watermark:
            output.refuse_unmarked(raw)
        rule = getattr(self.settings.output, record.tier, None)
        if rule is None or self.settings.shadow:
            return raw
        return output.shape(rule, record.tier, raw, typed)

    def _check_model(self, model: str) -> None:
        if self.models is not None and model not in self.models:
            raise ApiError(
                404,
                f"the model {model!r} does not exist; available: {', '.join(sorted(self.models))}",
                "model_not_found",
                "model",
            )

    def _plan(self, record: KeyRecord, typed: protocol.Request) -> Plan:
        texts, given_ids = protocol.prompt_texts(typed)
        chat = isinstance(typed, protocol.ChatCompletionRequest)
        prompt_tokens = self.counter.count(texts, chat) + given_ids
        completion = 0
        if not isinstance(typed, protocol.EmbeddingRequest):
            completion = (typed.requested_tokens or self.settings.max_tokens_cap) * typed.n
        multiplier = getattr(self.settings.tiers, record.tier, 1.0)
        return Plan(
            quota.plan(record, self.settings.limits, multiplier, prompt_tokens + completion),
            prompt_tokens,
        )

    def _admission(self, plan: quota.Quota, decision: Decision, event: Event) -> dict[str, str]:
        headers = quota.headers(plan, decision)
        if decision.allowed:
            if event.decision != "blocked":  # shadow-mode blocks stay visible
                event.decision = "admitted"
            return headers
        message, error_type = quota.refusal_message(plan, decision)
        event.refused_by = decision.refused_by
        if self.settings.shadow:
            event.shadow = True
            event.decision = "refused"
            return {}
        event.decision = "refused"
        raise ApiError(429, message, quota.RATE_LIMIT_CODE, headers=headers, error_type=error_type)

    # -- the other endpoints -----------------------------------------------------------

    async def list_models(self, request: Request) -> Response:
        self.keys.authenticate(request.headers.get("authorization"))
        reply = await self.backend.models()
        return Response(reply.body, reply.status, media_type=reply.content_type)


@dataclass(frozen=True)
class Plan:
    quota: quota.Quota
    prompt_tokens: int


@dataclass
class Admitted:
    """An admitted request: answered whole or streamed, then ended exactly once: settled
    with the limiter that admitted it, recorded, and counted off the gateway's open set."""

    gateway: Gateway
    limiter: Limiter  # the one that admitted it (the fallback, when Redis was down)
    trace: Trace
    plan: Plan
    decision: Decision
    limit_headers: dict[str, str]
    ended: bool = False

    @property
    def event(self) -> Event:
        assert self.trace.event is not None
        return self.trace.event

    async def end(self, status: int, error: str | None) -> None:
        """Settle the reservation by the usage recorded on the event, then emit the event.

        Shielded: at a shutdown deadline the server cancels open requests, and this is
        what keeps their leases from leaking and their events from being lost.
        """
        if self.ended:
            return
        self.ended = True
        event = self.event
        used = (event.prompt_tokens or 0) + (event.completion_tokens or 0)
        # Queued, the body waits as the bytes it came in: decoded, an object-dense body
        # takes 10-25x its size in memory. The store's write decodes it again.
        event.request = self.trace.body
        with anyio.CancelScope(shield=True):
            try:
                await self.settle(used)
            finally:
                self.gateway.sink.emit(self.trace.finish(status, error), self.trace.size)
                self.gateway.request_ended()

    async def settle(self, used_tokens: int) -> None:
        """Replace the reservation by real usage and release the concurrency slots."""
        metrics.IN_FLIGHT.dec()
        if not self.decision.allowed:  # shadow mode: nothing was consumed
            return
        try:
            await self.limiter.settle(
                self.plan.quota.settlement(used_tokens),
                self.plan.quota.slots,
                self.decision.lease,
            )
        except Exception as exc:  # the limiter's store is down: leases expire on their own
            limiter_log.error("could not settle request %s: %s", self.trace.request_id, exc)

    async def complete(self, endpoint: str, raw: dict[str, Any]) -> Response:
        metrics.IN_FLIGHT.inc()
        # What the event says if the answer never comes (cancelled at a shutdown deadline).
        status, error = 503, "cancelled before the answer"
        try:
            reply = await self.gateway.backend.complete(endpoint, raw, self.event.cohort)
            status, error = reply.status, None
            self._record_usage(reply.data)
        except ApiError as exc:
            status, error = exc.status, exc.message
            metrics.UPSTREAM_ERRORS.labels(exc.code or "error").inc()
            return error_response(exc, self.trace.request_id)
        finally:
            await self.end(status, error)
        headers = {**self.limit_headers, "x-request-id": self.trace.request_id}
        return Response(reply.body, reply.status, headers=headers, media_type=reply.content_type)

    def _record_usage(self, data: Any) -> None:
        """Usage from the answer (our own count when it has none or it is not a count)."""
        event = self.event
        if not isinstance(data, dict):
            return
        texts = _answer_texts(data)
        event.response_text = "\n\n".join(texts) if texts else None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        prompt, completion = usage_counts(usage)
        event.prompt_tokens = token_count(prompt, event.prompt_tokens)
        event.completion_tokens = token_count(completion, None)
        if event.completion_tokens is None:
            event.completion_tokens = self.gateway.counter.count(texts, chat=False) if texts else 0
        metrics.TOKENS.labels("prompt").inc(event.prompt_tokens or 0)
        metrics.TOKENS.labels("completion").inc(event.completion_tokens)

    async def stream(
        self, endpoint: str, raw: dict[str, Any], typed: protocol.Request
    ) -> Response | EventStream:
        metrics.IN_FLIGHT.inc()
        wants_usage = bool(typed.stream_options and typed.stream_options.include_usage)  # type: ignore[union-attr]
        payload = raw
        if not isinstance(typed, protocol.ResponsesRequest):  # Responses always end with usage
            asked = raw.get("stream_options") or {}
            payload = {**raw, "stream_options": {**asked, "include_usage": True}}
        chunks = self.gateway.backend.stream(endpoint, payload, self.event.cohort)
        try:
            first = await anext(chunks, None)
        except ApiError as exc:
            metrics.UPSTREAM_ERRORS.labels(exc.code or "error").inc()
            await self.end(exc.status, exc.message)
            return error_response(exc, self.trace.request_id)
        except BaseException:  # cancelled while waiting for the first chunk
            await self.end(503, "cancelled before the answer")
            raise
        if isinstance(first, Reply):  # refused upstream: pass its answer on
            await self.end(first.status, "refused upstream")
            return Response(first.body, first.status, media_type=first.content_type)
        relay = StreamRelay(first, chunks, wants_usage)
        headers = {**self.limit_headers, "x-request-id": self.trace.request_id}
        return EventStream(
            relay.events(),
            headers,
            on_close=lambda outcome: self._closed(relay, outcome),
            max_seconds=self.gateway.max_stream_seconds,
        )

    async def _closed(self, relay: StreamRelay, outcome: str) -> None:
        event = self.event
        event.response_text = "\n\n".join(relay.texts()) or None
        prompt, completion = usage_counts(relay.usage or {})
        event.prompt_tokens = token_count(prompt, event.prompt_tokens)
        event.completion_tokens = token_count(completion, None)
        if event.completion_tokens is None:
            event.completion_tokens = self.gateway.counter.count(relay.texts(), chat=False)
        await self.end(*STREAM_OUTCOMES[outcome])


def token_count(value: Any, default: int | None) -> int | None:
    """A usage count as the upstream reported it, if it is one; else `default`. Anything
    else (a string, a float, a negative) must neither skip settling nor reach a column."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31:
        return value
    return default


def usage_counts(usage: dict[str, Any]) -> tuple[Any, Any]:
    """(prompt, completion) tokens as chat and completions name them, or the Responses API
    (`input_tokens`, `output_tokens`)."""
    if "input_tokens" in usage or "output_tokens" in usage:
        return usage.get("input_tokens"), usage.get("output_tokens")
    return usage.get("prompt_tokens"), usage.get("completion_tokens")


def _answer_texts(data: dict[str, Any]) -> list[str]:
    texts = []
    for item in data.get("output") or () if data.get("object") == "response" else ():
        if isinstance(item, dict) and item.get("type") == "message":
            parts = item.get("content") if isinstance(item.get("content"), list) else ()
            said = [p.get("text") for p in parts if isinstance(p, dict)]
            texts.append("".join(t for t in said if isinstance(t, str)))
    for choice in data.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else choice.get("text")
        if isinstance(text, str):
            texts.append(text)
    return texts


def create_app(
    gateway: Gateway,
    lifespan=None,
    extra_routes: Sequence[BaseRoute] = (),
    metrics_token: str | None = None,
    exception_handlers: Mapping[type[Exception], ExceptionHandler] | None = None,
) -> HotPath:
    """The gateway's ASGI app; `/metrics` asks for `metrics_token` (the admin token) when set.

    `extra_routes` (the admin API, the OpenAPI document) raise their errors; they are
    answered here, once: `ApiError`s as they are, `exception_handlers` for the others.
    """

    async def chat(request: Request) -> Any:
        return await gateway.handle(request, "/chat/completions", protocol.ChatCompletionRequest)

    async def completions(request: Request) -> Any:
        return await gateway.handle(request, "/completions", protocol.CompletionRequest)

    async def embeddings(request: Request) -> Any:
        return await gateway.handle(request, "/embeddings", protocol.EmbeddingRequest)

    async def responses(request: Request) -> Any:
        return await gateway.handle(request, "/responses", protocol.ResponsesRequest)

    async def healthz(request: Request) -> Response:
        if not gateway.sink.alive:  # answering on would serve requests no one records
            return JSONResponse({"status": "event writer stopped"}, 503)
        if not gateway.keys.healthy:  # revoked keys would still be accepted here
            return JSONResponse({"status": "key refresh failing"}, 503)
        return JSONResponse({"status": "ok"})

    async def prometheus(request: Request) -> Response:
        if metrics_token is not None and not bearer_matches(
            request.headers.get("authorization"), metrics_token
        ):
            raise ApiError(401, "invalid or missing token", "invalid_token")
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/responses", responses, methods=["POST"]),
        Route("/v1/models", gateway.list_models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        *extra_routes,
    ]
    handlers: dict[Any, ExceptionHandler] = {
        ApiError: http.api_error,
        404: http.not_found,
        405: http.method_not_allowed,
        Exception: http.internal,
        **(exception_handlers or {}),
    }
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    return HotPath(
        app,
        {
            "/v1/chat/completions": chat,
            "/v1/completions": completions,
            "/v1/embeddings": embeddings,
            "/v1/responses": responses,
        },
        gateway.settings.max_header_bytes,
    )
