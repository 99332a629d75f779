"""Client for an OpenAI-compatible upstream (vLLM, a cloud API, another gateway).

Bodies go through as the client sent them (the gateway only adds what it
needs, e.g. usage reporting on streams); failures become OpenAI-shaped 502s
and 504s, never exceptions that reach the client as a 500.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from distillguard.gateway.errors import ApiError


@dataclass
class Reply:
    """A whole (non-streamed) upstream answer."""

    status: int
    body: bytes
    data: Any  # the decoded JSON body, or None if it was not JSON
    content_type: str = "application/json"


class UpstreamClient:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_connections: int = 512,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def request(self, method: str, path: str, payload: Any = None) -> Reply:
        content = None if payload is None else msgspec.json.encode(payload)
        try:
            response = await self._client.request(
                method, path, content=content, headers=_json_headers(content)
            )
        except httpx.TimeoutException:
            raise _timeout() from None
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from None
        return _reply(response)

    async def stream(self, path: str, payload: Any) -> AsyncIterator[bytes | Reply]:
        """Yield each server-sent-event ``data:`` value; a non-200 answer yields one Reply."""
        content = msgspec.json.encode(payload)
        try:
            async with self._client.stream(
                "POST", path, content=content, headers=_json_headers(content)
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    yield _reply(response)
                    return
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        yield line[5:].strip().encode()
        except httpx.TimeoutException:
            raise _timeout() from None
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from None


def _json_headers(content: bytes | None) -> dict[str, str]:
    return {"content-type": "application/json"} if content is not None else {}


def _reply(response: httpx.Response) -> Reply:
    body = response.content
    try:
        data = msgspec.json.decode(body) if body else None
    except (msgspec.DecodeError, UnicodeDecodeError):
        data = None
    if response.status_code >= 500:
        raise ApiError(
            502, f"the upstream failed with HTTP {response.status_code}", "upstream_error"
        )
    content_type = response.headers.get("content-type", "application/json")
    return Reply(response.status_code, body, data, content_type)


def _timeout() -> ApiError:
    return ApiError(504, "the upstream did not answer in time", "upstream_timeout")


def _unreachable(exc: Exception) -> ApiError:
    return ApiError(502, f"the upstream connection failed ({type(exc).__name__})", "upstream_error")


class UpstreamBackend:
    """The gateway's backend for `serve --upstream URL`."""

    def __init__(self, client: UpstreamClient) -> None:
        self.client = client

    async def models(self) -> Reply:
        return await self.client.request("GET", "/models")

    async def complete(self, endpoint: str, payload: dict[str, Any], cohort: int | None) -> Reply:
        return await self.client.request("POST", endpoint, payload)

    def stream(
        self, endpoint: str, payload: dict[str, Any], cohort: int | None
    ) -> AsyncIterator[bytes | Reply]:
        return self.client.stream(endpoint, payload)

    async def close(self) -> None:
        await self.client.close()
