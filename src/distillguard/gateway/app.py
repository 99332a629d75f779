"""The ASGI app: OpenAI's endpoints, each request read top to bottom in `Gateway.handle`.

auth → policy (tier) → model check → token count → limits (one atomic admit)
→ backend (whole or streamed answer) → settle the reservation → one event.
Every failure on the way is an `ApiError`, answered in OpenAI's shape.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from distillguard.config import GatewaySettings
from distillguard.gateway import metrics, protocol, quota
from distillguard.gateway.auth import KeyRing
from distillguard.gateway.backend import Backend
from distillguard.gateway.errors import ApiError
from distillguard.gateway.events import EventSink
from distillguard.gateway.limits import Decision, Limiter
from distillguard.gateway.tokens import TokenCounter
from distillguard.gateway.upstream import Reply
from distillguard.store import Event, KeyRecord
from distillguard.watermark.cohorts import Cohorts

log = logging.getLogger(__name__)
DONE = b"data: [DONE]\n\n"
INTERNAL_ERROR = ApiError(500, "internal error in the gateway", "internal_error")


@dataclass
class Trace:
    """What one request leaves behind: filled as the request goes, emitted once."""

    endpoint: str
    started: float = field(default_factory=time.time)
    clock: float = field(default_factory=time.perf_counter)
    request_id: str = field(default_factory=lambda: f"req_{secrets.token_hex(12)}")
    event: Event | None = None

    def begin(self, request: Request) -> Event:
        client = request.client
        self.event = Event(
            ts=self.started,
            request_id=self.request_id,
            endpoint=self.endpoint,
            status=0,
            latency_ms=0.0,
            decision="rejected",
            client_ip=client.host if client else None,
            user_agent=request.headers.get("user-agent"),
        )
        return self.event

    def finish(self, status: int, error: str | None = None) -> Event:
        assert self.event is not None
        self.event.status = status
        self.event.error = error
        self.event.latency_ms = (time.perf_counter() - self.clock) * 1000
        metrics.REQUESTS.labels(self.endpoint, str(status), self.event.decision).inc()
        metrics.LATENCY.labels(self.endpoint).observe(self.event.latency_ms / 1000)
        return self.event


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
        self.lease_ttl = max(600.0, 2 * settings.upstream_timeout)

    # -- the hot path ---------------------------------------------------------------

    async def handle(self, request: Request, endpoint: str, kind: type[protocol.Request]) -> Any:
        trace = Trace(endpoint)
        event = trace.begin(request)
        try:
            # Authenticate first: an anonymous caller costs no parsing and learns nothing.
            record = self.keys.authenticate(request.headers.get("authorization"))
            self._identify(event, record)
            body = await read_body(request, self.settings.max_body_bytes)
            typed, raw = protocol.parse(body, kind)
            event.model, event.request = typed.model, raw
            event.stream = bool(getattr(typed, "stream", False))
            self._check_policy(record, event)
            self._check_model(typed.model)
            plan = self._plan(record, typed)
            event.prompt_tokens = plan.prompt_tokens
            decision = await self.limiter.admit(
                plan.quota.charges, plan.quota.slots, lease_ttl=self.lease_ttl
            )
            limit_headers = self._admission(plan.quota, decision, event)
        except ApiError as exc:
            self.sink.emit(trace.finish(exc.status, exc.message))
            return error_response(exc, trace.request_id)
        admitted = Admitted(self, trace, plan, decision, limit_headers)
        if event.stream:
            return await admitted.stream(endpoint, raw, typed)
        return await admitted.complete(endpoint, raw)

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
        message, code = quota.refusal_message(plan, decision)
        event.refused_by = decision.refused_by
        if self.settings.shadow:
            event.shadow = True
            event.decision = "refused"
            return {}
        event.decision = "refused"
        raise ApiError(429, message, code, headers=headers)

    # -- the other endpoints -----------------------------------------------------------

    async def list_models(self, request: Request) -> Response:
        try:
            self.keys.authenticate(request.headers.get("authorization"))
            reply = await self.backend.models()
        except ApiError as exc:
            return error_response(exc)
        return Response(reply.body, reply.status, media_type=reply.content_type)


@dataclass(frozen=True)
class Plan:
    quota: quota.Quota
    prompt_tokens: int


@dataclass
class Admitted:
    """An admitted request: answered whole or streamed, then settled exactly once."""

    gateway: Gateway
    trace: Trace
    plan: Plan
    decision: Decision
    limit_headers: dict[str, str]
    settled: bool = False

    @property
    def event(self) -> Event:
        assert self.trace.event is not None
        return self.trace.event

    async def settle(self, used_tokens: int) -> None:
        """Replace the reservation by real usage and release the concurrency slots."""
        if self.settled:
            return
        self.settled = True
        metrics.IN_FLIGHT.dec()
        if not self.decision.allowed:  # shadow mode: nothing was consumed
            return
        try:
            await self.gateway.limiter.settle(
                self.plan.quota.settlement(used_tokens),
                self.plan.quota.slots,
                self.decision.lease,
            )
        except Exception:  # the limiter's store is down: leases expire on their own
            log.exception("could not settle request %s", self.trace.request_id)

    async def complete(self, endpoint: str, raw: dict[str, Any]) -> Response:
        metrics.IN_FLIGHT.inc()
        reply: Reply | None = None
        status, error = 200, None
        try:
            reply = await self.gateway.backend.complete(endpoint, raw, self.event.cohort)
            status = reply.status
        except ApiError as exc:
            status, error = exc.status, exc.message
            metrics.UPSTREAM_ERRORS.labels(exc.code or "error").inc()
            return error_response(exc, self.trace.request_id)
        finally:
            used = self._record_usage(reply.data if reply else None)
            await self.settle(used)
            self.gateway.sink.emit(self.trace.finish(status, error))
        headers = {**self.limit_headers, "x-request-id": self.trace.request_id}
        return Response(reply.body, reply.status, headers=headers, media_type=reply.content_type)

    def _record_usage(self, data: Any) -> int:
        """Usage from the answer (our own count when it has none); returns total tokens."""
        event = self.event
        if not isinstance(data, dict):
            return event.prompt_tokens or 0
        texts = _answer_texts(data)
        event.response_text = "\n\n".join(texts) if texts else None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        prompt = usage.get("prompt_tokens")
        completion = usage.get("completion_tokens")
        if isinstance(prompt, int):
            event.prompt_tokens = prompt
        if not isinstance(completion, int):
            completion = self.gateway.counter.count(texts, chat=False) if texts else 0
        event.completion_tokens = completion
        metrics.TOKENS.labels("prompt").inc(event.prompt_tokens or 0)
        metrics.TOKENS.labels("completion").inc(completion)
        return (event.prompt_tokens or 0) + completion

    async def stream(
        self, endpoint: str, raw: dict[str, Any], typed: protocol.Request
    ) -> Response | EventStream:
        metrics.IN_FLIGHT.inc()
        wants_usage = bool(typed.stream_options and typed.stream_options.include_usage)  # type: ignore[union-attr]
        payload = {
            **raw,
            "stream_options": {**(raw.get("stream_options") or {}), "include_usage": True},
        }
        chunks = self.gateway.backend.stream(endpoint, payload, self.event.cohort)
        try:
            first = await anext(chunks, None)
        except ApiError as exc:
            await self.settle(self.event.prompt_tokens or 0)
            metrics.UPSTREAM_ERRORS.labels(exc.code or "error").inc()
            self.gateway.sink.emit(self.trace.finish(exc.status, exc.message))
            return error_response(exc, self.trace.request_id)
        if isinstance(first, Reply):  # refused upstream: pass its answer on
            await self.settle(self.event.prompt_tokens or 0)
            self.gateway.sink.emit(self.trace.finish(first.status, "refused upstream"))
            return Response(first.body, first.status, media_type=first.content_type)
        relay = StreamRelay(first, chunks, wants_usage)
        headers = {**self.limit_headers, "x-request-id": self.trace.request_id}
        return EventStream(
            relay.events(), headers, on_close=lambda outcome: self._closed(relay, outcome)
        )

    async def _closed(self, relay: StreamRelay, outcome: str) -> None:
        event = self.event
        event.response_text = "\n\n".join(relay.texts()) or None
        if relay.usage is not None:
            event.prompt_tokens = relay.usage.get("prompt_tokens", event.prompt_tokens)
            event.completion_tokens = relay.usage.get("completion_tokens")
        if event.completion_tokens is None:
            event.completion_tokens = self.gateway.counter.count(relay.texts(), chat=False)
        used = (event.prompt_tokens or 0) + (event.completion_tokens or 0)
        await self.settle(used)
        status = 200 if outcome == "completed" else 499 if outcome == "disconnected" else 502
        self.gateway.sink.emit(self.trace.finish(status, None if status == 200 else outcome))


class StreamRelay:
    """Forwards upstream chunks while collecting the answer text and usage for the event."""

    def __init__(self, first: bytes, rest: AsyncIterator[bytes | Reply], wants_usage: bool) -> None:
        self.first = first
        self.rest = rest
        self.wants_usage = wants_usage
        self.usage: dict[str, Any] | None = None
        self._texts: dict[int, list[str]] = {}

    def texts(self) -> list[str]:
        return ["".join(parts) for _, parts in sorted(self._texts.items())]

    async def events(self) -> AsyncIterator[bytes]:
        item: bytes | Reply | None = self.first
        while item is not None:
            if isinstance(item, bytes):
                if item == b"[DONE]":
                    break
                forward = self._observe(item)
                if forward:
                    yield b"data: " + item + b"\n\n"
            item = await anext(self.rest, None)
        yield DONE

    def _observe(self, data: bytes) -> bool:
        """Note text and usage of one chunk; False for a usage chunk the client did not ask for."""
        try:
            chunk = msgspec.json.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return True
        if not isinstance(chunk, dict):
            return True
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content") if isinstance(delta, dict) else None
            if text is None:
                text = choice.get("text")
            if isinstance(text, str):
                self._texts.setdefault(int(choice.get("index") or 0), []).append(text)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
            if not chunk.get("choices") and not self.wants_usage:
                return False
        return True


class EventStream:
    """A server-sent-event response whose `on_close` runs exactly once, however it ends.

    Outcome is ``completed``, ``disconnected`` (the client went away) or
    ``failed`` (the upstream broke mid-stream; the client gets an error event).
    """

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        headers: dict[str, str],
        on_close: Callable[[str], Awaitable[None]],
    ) -> None:
        self.chunks = chunks
        self.headers = headers
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome = "disconnected"
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                        *((k.encode(), v.encode()) for k, v in self.headers.items()),
                    ],
                }
            )
            async with anyio.create_task_group() as group:

                async def watch_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(watch_disconnect)
                outcome = await self._relay(send)
                group.cancel_scope.cancel()
        except OSError:
            outcome = "disconnected"
        finally:
            with anyio.CancelScope(shield=True):
                await self.on_close(outcome)

    async def _relay(self, send: Send) -> str:
        try:
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except ApiError as exc:
            error = b"data: " + exc.body() + b"\n\n" + DONE
            await send({"type": "http.response.body", "body": error, "more_body": False})
            return "failed"
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return "completed"


def _answer_texts(data: dict[str, Any]) -> list[str]:
    texts = []
    for choice in data.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else choice.get("text")
        if isinstance(text, str):
            texts.append(text)
    return texts


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing early (413) once it exceeds `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body exceeds the {limit}-byte limit", "body_too_large")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(
                    413, f"the request body exceeds the {limit}-byte limit", "body_too_large"
                )
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(
            400, "the client disconnected while sending the body", "client_gone"
        ) from None
    return b"".join(chunks)


def error_response(exc: ApiError, request_id: str | None = None) -> Response:
    headers = dict(exc.headers)
    if request_id:
        headers["x-request-id"] = request_id
    return Response(exc.body(), exc.status, headers=headers, media_type="application/json")


class HotPath:
    """The completion endpoints served straight from ASGI; everything else goes to Starlette.

    They are nearly every request, and Starlette's middleware, router and
    request wrapper cost ~10 % of the gateway's CPU on each. Errors keep their
    OpenAI shape: `Gateway.handle` answers every `ApiError` itself and anything
    else becomes the same 500 body Starlette's handler gives.
    """

    def __init__(self, app: Starlette, routes: dict[str, Callable[[Request], Awaitable[Any]]]):
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = None
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self.routes.get(scope["path"])
        if handler is None:  # the lifespan, other routes, other methods (405)
            await self.app(scope, receive, send)
            return
        try:
            response = await handler(Request(scope, receive, send))
        except Exception:
            log.exception("unhandled error on %s", scope["path"])
            response = error_response(INTERNAL_ERROR)
        await response(scope, receive, send)


def create_app(gateway: Gateway, lifespan=None, extra_routes: Sequence[Route] = ()) -> HotPath:
    async def chat(request: Request) -> Any:
        return await gateway.handle(request, "/chat/completions", protocol.ChatCompletionRequest)

    async def completions(request: Request) -> Any:
        return await gateway.handle(request, "/completions", protocol.CompletionRequest)

    async def embeddings(request: Request) -> Any:
        return await gateway.handle(request, "/embeddings", protocol.EmbeddingRequest)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(ApiError(404, f"no route {request.url.path}", "not_found"))

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return error_response(
            ApiError(405, f"{request.method} is not allowed on {request.url.path}", "bad_method")
        )

    async def internal(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path, exc_info=exc)
        return error_response(INTERNAL_ERROR)

    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", gateway.list_models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        *extra_routes,
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={404: not_found, 405: method_not_allowed, Exception: internal},
        lifespan=lifespan,
    )
    return HotPath(
        app,
        {
            "/v1/chat/completions": chat,
            "/v1/completions": completions,
            "/v1/embeddings": embeddings,
        },
    )
