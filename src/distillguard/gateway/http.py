"""HTTP plumbing every gateway endpoint shares: bounded body reading, OpenAI-shaped error
answers (the Starlette app's exception handlers among them) and `HotPath`, which serves
the completion endpoints straight from ASGI."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from distillguard.gateway.errors import INTERNAL_ERROR, SHUTTING_DOWN, ApiError

log = logging.getLogger(__name__)


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


# The Starlette app's exception handlers: every error leaves in OpenAI's shape.


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def not_found(request: Request, exc: Exception) -> Response:
    return error_response(ApiError(404, f"no route {request.url.path}", "not_found"))


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    return error_response(
        ApiError(405, f"{request.method} is not allowed on {request.url.path}", "bad_method")
    )


async def internal(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    return error_response(INTERNAL_ERROR)


class HotPath:
    """The completion endpoints served straight from ASGI; everything else goes to Starlette.

    They are nearly every request, and Starlette's middleware, router and
    request wrapper cost ~10 % of the gateway's CPU on each. Errors keep their
    OpenAI shape: `Gateway.handle` answers every `ApiError` itself and anything
    else becomes the same 500 body Starlette's handler gives.
    """

    def __init__(
        self,
        app: Starlette,
        routes: dict[str, Callable[[Request], Awaitable[Any]]],
        max_header_bytes: int = 16 << 10,
    ):
        self.app = app
        self.routes = routes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = None
        if scope["type"] == "http":
            if sum(len(k) + len(v) for k, v in scope["headers"]) > self.max_header_bytes:
                # The server holds no limit of its own; headers end up in events and logs.
                limit = self.max_header_bytes
                error = ApiError(431, f"request headers exceed {limit} bytes", "headers_too_large")
                await error_response(error)(scope, receive, send)
                return
            if scope["method"] == "POST":
                handler = self.routes.get(scope["path"])
        if handler is None:  # the lifespan, other routes, other methods (405)
            await self.app(scope, receive, send)
            return
        try:
            response = await handler(Request(scope, receive, send))
        except asyncio.CancelledError:  # the shutdown deadline: the request recorded itself
            response = error_response(SHUTTING_DOWN)
        except Exception:
            log.exception("unhandled error on %s", scope["path"])
            response = error_response(INTERNAL_ERROR)
        await response(scope, receive, send)
