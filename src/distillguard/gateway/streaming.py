"""The server-sent-event relay: a backend's chunks to the client, noted for the event.

`StreamRelay` forwards chunks while collecting the answer text and usage;
`EventStream` is the ASGI response that sends them and reports, exactly once,
how the stream ended (`STREAM_OUTCOMES` says how each end is recorded).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import msgspec
from starlette.types import Receive, Scope, Send

from distillguard.gateway.backends.base import Reply
from distillguard.gateway.errors import SHUTTING_DOWN, ApiError

DONE = b"data: [DONE]\n\n"


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
        kind = chunk.get("type")
        if isinstance(kind, str) and kind.startswith("response."):
            self._observe_response(kind, chunk)
            return True
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content") if isinstance(delta, dict) else None
            if text is None:
                text = choice.get("text")
            if isinstance(text, str):
                self._texts.setdefault(_index(choice.get("index")), []).append(text)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
            if not chunk.get("choices") and not self.wants_usage:
                return False
        return True

    def _observe_response(self, kind: str, event: dict[str, Any]) -> None:
        """A Responses API stream: text in `response.output_text.delta` events, usage in the
        last one (`response.completed`, or `response.incomplete` when cut by a limit)."""
        if kind == "response.output_text.delta" and isinstance(event.get("delta"), str):
            self._texts.setdefault(_index(event.get("output_index")), []).append(event["delta"])
        elif kind in ("response.completed", "response.incomplete"):
            response = event.get("response")
            usage = response.get("usage") if isinstance(response, dict) else None
            if isinstance(usage, dict):
                self.usage = usage


def _index(value: Any) -> int:
    """A choice's (or output item's) index, if the chunk carries a sane one."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


class EventStream:
    """A server-sent-event response whose `on_close` runs exactly once, however it ends.

    Outcome is ``completed``, ``disconnected`` (the client went away), ``failed`` (the
    upstream broke mid-stream), ``too_long`` (cut at `max_seconds`, before the request's
    concurrency lease could lapse) or ``shutdown`` (cancelled at the server's shutdown
    deadline); on the last three the client gets an error event.
    """

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        headers: dict[str, str],
        on_close: Callable[[str], Awaitable[None]],
        max_seconds: float = math.inf,
    ) -> None:
        self.chunks = chunks
        self.headers = headers
        self.on_close = on_close
        self.max_seconds = max_seconds

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
        except asyncio.CancelledError:
            # Not the disconnect watcher (its cancellation ends inside the task group):
            # the server cancelled us at its shutdown deadline. The client is told so, and
            # the task ends normally: nothing is left to cancel, and no traceback is logged.
            outcome = "shutdown"
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await self._fail(send, SHUTTING_DOWN)
        finally:
            with anyio.CancelScope(shield=True):
                await self.on_close(outcome)

    async def _relay(self, send: Send) -> str:
        with anyio.move_on_after(self.max_seconds) as deadline:
            try:
                async for chunk in self.chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except ApiError as exc:
                await self._fail(send, exc)
                return "failed"
        if deadline.cancelled_caught:
            limit = f"{self.max_seconds:g}"
            await self._fail(
                send, ApiError(504, f"the stream exceeded {limit} s; cut", "stream_too_long")
            )
            return "too_long"
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return "completed"

    @staticmethod
    async def _fail(send: Send, exc: ApiError) -> None:
        error = b"data: " + exc.body() + b"\n\n" + DONE
        await send({"type": "http.response.body", "body": error, "more_body": False})


# How each end of a stream is recorded: (status, error).
STREAM_OUTCOMES = {
    "completed": (200, None),
    "disconnected": (499, "disconnected"),
    "failed": (502, "failed"),
    "too_long": (504, "too_long"),
    "shutdown": (503, "cancelled at shutdown"),
}
