"""The interface every backend implements, and the answer value it returns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class Reply:
    """A whole (non-streamed) answer, or a refusal, as the backend gave it."""

    status: int
    body: bytes
    data: Any  # the decoded JSON body, or None if it was not JSON
    content_type: str = "application/json"


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
