"""What answers an admitted request: an upstream API or the bundled model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from distillguard.gateway.upstream import Reply


class Backend(Protocol):
    async def models(self) -> Reply:
        """The OpenAI ``GET /models`` answer."""

    async def complete(self, endpoint: str, payload: dict[str, Any], cohort: int | None) -> Reply:
        """A whole answer for ``/chat/completions``, ``/completions`` or ``/embeddings``."""

    def stream(
        self, endpoint: str, payload: dict[str, Any], cohort: int | None
    ) -> AsyncIterator[bytes | Reply]:
        """Server-sent-event data values (JSON chunks), or one Reply if refused upstream."""

    async def close(self) -> None: ...
