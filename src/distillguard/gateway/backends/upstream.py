"""Client for an OpenAI-compatible upstream (vLLM, a cloud API, another gateway).

Bodies go through as the client sent them (the gateway only adds what it
needs, e.g. usage reporting on streams), less the fields that steer the engine
itself: vLLM's per-request `vllm_xargs` (the arguments its logits processors
read), its `watermarking` opt-out (which would switch vLLM's own watermark off
even where the server enforces it) and its cache-transfer settings. Behind the
plug-in, vLLM's beam search is refused: it ranks beams by log-probabilities
taken before any logits processor, so its answers would carry no mark
(`gateway/output.py`, before admission). Behind an upstream that carries
distillguard's plug-in, the gateway sets `vllm_xargs` to the account's cohort.
Failures become OpenAI-shaped 502s
and 504s, never exceptions that reach the client as a 500. Redirects are never
followed: a 307/308 would re-send the prompt (and our upstream key) wherever the
upstream points, so any 3xx is a 502.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec

from distillguard.gateway.backends.base import Reply
from distillguard.gateway.errors import ApiError
from distillguard.watermark.cohorts import COHORT_ARG

log = logging.getLogger(__name__)
MAX_LINE_BYTES = 1 << 20  # one server-sent event line; upstream chunks are far smaller
# The engine's own controls, never a client's: vLLM's per-request processor arguments, its
# watermark opt-out, its KV/encoder-cache transfer settings and request id.
ENGINE_FIELDS = frozenset(
    ["vllm_xargs", "watermarking", "kv_transfer_params", "ec_transfer_params", "request_id"]
)


class UpstreamClient:
    """aiohttp, not httpx: on the hot path its connection pool costs O(1) per request.

    (httpcore checks every idle pooled connection on every request; at 64
    concurrent requests that alone halved the gateway's throughput.)
    The session is created on first use, inside the server's event loop.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_connections: int = 512,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_connections = max_connections
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        connect = min(timeout, 10.0)
        # A whole answer must arrive within `timeout`; a stream only between two chunks.
        self._whole = aiohttp.ClientTimeout(total=timeout, connect=connect)
        self._streamed = aiohttp.ClientTimeout(total=None, connect=connect, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                read_bufsize=MAX_LINE_BYTES,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, path: str, payload: Any = None) -> Reply:
        content = None if payload is None else msgspec.json.encode(payload)
        try:
            async with self._client().request(
                method,
                self.base_url + path,
                data=content,
                headers=_json_headers(content),
                timeout=self._whole,
                allow_redirects=False,
            ) as response:
                body = await response.read()
        except TimeoutError:
            raise _timeout() from None
        except aiohttp.ClientError as exc:
            raise _unreachable(exc) from None
        return _reply(response.status, body, response.content_type)

    async def stream(self, path: str, payload: Any) -> AsyncIterator[bytes | Reply]:
        """Yield each server-sent-event ``data:`` value; a non-200 answer yields one Reply."""
        content = msgspec.json.encode(payload)
        try:
            async with self._client().post(
                self.base_url + path,
                data=content,
                headers=_json_headers(content),
                timeout=self._streamed,
                allow_redirects=False,
            ) as response:
                if response.status != 200:
                    yield _reply(response.status, await response.read(), response.content_type)
                    return
                async for line in response.content:
                    if line.startswith(b"data:"):
                        yield line[5:].strip()
        except TimeoutError:
            raise _timeout() from None
        except (aiohttp.ClientError, ValueError) as exc:  # ValueError: an over-long line
            raise _unreachable(exc) from None


class _Throttled:
    """Upstream failures in the log: the first of each kind at once, then at most one line
    per `every` seconds with how many were not logged, so a failing upstream at thousands
    of requests a second does not flood the log."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.last: dict[str, float] = {}
        self.unlogged: dict[str, int] = {}

    def __call__(self, error: ApiError) -> ApiError:
        now = time.monotonic()
        kind = error.message
        if now - self.last.get(kind, -self.every) < self.every:
            self.unlogged[kind] = self.unlogged.get(kind, 0) + 1
            return error
        self.last[kind] = now
        more = self.unlogged.pop(kind, 0)
        log.warning("%s%s", kind, f" (and {more} more since the last line)" if more else "")
        return error


_failed = _Throttled()


def _json_headers(content: bytes | None) -> dict[str, str]:
    return {"content-type": "application/json"} if content is not None else {}


def _reply(status: int, body: bytes, content_type: str | None) -> Reply:
    try:
        data = msgspec.json.decode(body) if body else None
    except (msgspec.DecodeError, UnicodeDecodeError):
        data = None
    if status >= 500:
        raise _failed(ApiError(502, f"the upstream failed with HTTP {status}", "upstream_error"))
    if 300 <= status < 400:
        message = f"the upstream answered with a redirect (HTTP {status}), which is not followed"
        raise _failed(ApiError(502, message, "upstream_error"))
    return Reply(status, body, data, content_type or "application/json")


def _timeout() -> ApiError:
    return _failed(ApiError(504, "the upstream did not answer in time", "upstream_timeout"))


def _unreachable(exc: Exception) -> ApiError:
    message = f"the upstream connection failed ({type(exc).__name__})"
    return _failed(ApiError(502, message, "upstream_error"))


class UpstreamBackend:
    """The gateway's backend for `serve --upstream URL`."""

    def __init__(self, client: UpstreamClient, *, marks_cohorts: bool = False) -> None:
        self.client = client
        self.marks_cohorts = marks_cohorts  # the upstream runs distillguard's vLLM plug-in

    async def models(self) -> Reply:
        return await self.client.request("GET", "/models")

    async def complete(self, endpoint: str, payload: dict[str, Any], cohort: int | None) -> Reply:
        return await self.client.request("POST", endpoint, self._for_engine(payload, cohort))

    def stream(
        self, endpoint: str, payload: dict[str, Any], cohort: int | None
    ) -> AsyncIterator[bytes | Reply]:
        return self.client.stream(endpoint, self._for_engine(payload, cohort))

    def _for_engine(self, payload: dict[str, Any], cohort: int | None) -> dict[str, Any]:
        """The body as the engine gets it: no client-set engine fields, our cohort added."""
        marked = self.marks_cohorts and cohort is not None
        if not marked and ENGINE_FIELDS.isdisjoint(payload):
            return payload  # the common case: no copy
        body = {name: value for name, value in payload.items() if name not in ENGINE_FIELDS}
        if marked:
            body["vllm_xargs"] = {COHORT_ARG: cohort}
        return body

    async def close(self) -> None:
        await self.client.close()
