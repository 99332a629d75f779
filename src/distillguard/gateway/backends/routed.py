"""The bundled model beside an upstream: requests for the bundled model's name are answered
(watermarked) here, every other model is proxied (`serve --engine bundled --upstream URL`).

What one gateway needs to show its watermark on a few answers while a cheaper backend
carries the rest of the traffic (the demo's synthetic one, or a staging upstream); limits,
events and tracing see one gateway either way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from distillguard.gateway.backends.base import Backend, Reply
from distillguard.gateway.backends.bundled import MODEL_NAME


class RoutedBackend:
    def __init__(self, bundled: Backend, upstream: Backend) -> None:
        self.bundled = bundled
        self.upstream = upstream

    def _for(self, payload: dict[str, Any]) -> Backend:
        return self.bundled if payload.get("model") == MODEL_NAME else self.upstream

    async def models(self) -> Reply:
        """The upstream's list with the bundled model added (the upstream's answer as it
        came when it is not a list: its error is the operator's to see)."""
        upstream = await self.upstream.models()
        if upstream.status != 200 or not isinstance(upstream.data, dict):
            return upstream
        ours = (await self.bundled.models()).data["data"]
        theirs = upstream.data.get("data")
        listed = [
            m
            for m in (theirs if isinstance(theirs, list) else [])
            if not (isinstance(m, dict) and m.get("id") == MODEL_NAME)
        ]
        data = {**upstream.data, "data": ours + listed}
        return Reply(200, msgspec.json.encode(data), data)

    async def complete(self, endpoint: str, payload: dict[str, Any], cohort: int | None) -> Reply:
        return await self._for(payload).complete(endpoint, payload, cohort)

    def stream(
        self, endpoint: str, payload: dict[str, Any], cohort: int | None
    ) -> AsyncIterator[bytes | Reply]:
        return self._for(payload).stream(endpoint, payload, cohort)

    async def close(self) -> None:
        await self.bundled.close()
        await self.upstream.close()
