"""OpenAI-shaped errors: every refusal the gateway makes, as clients expect it.

Body ``{"error": {"message", "type", "param", "code"}}`` with the status codes
the OpenAI API uses, so SDKs raise their usual exception classes (and retry
429s on their own).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
    502: "upstream_error",
    503: "server_error",
    504: "timeout_error",
}


@dataclass
class ApiError(Exception):
    status: int
    message: str
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    error_type: str | None = None  # else the status's usual type

    @property
    def type(self) -> str:
        return self.error_type or _TYPES.get(self.status, "server_error")

    def body(self) -> bytes:
        return msgspec.json.encode(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "param": self.param,
                    "code": self.code,
                }
            }
        )

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


# Answers the gateway gives for its own failures (HotPath, the Starlette app, streams).
INTERNAL_ERROR = ApiError(500, "internal error in the gateway", "internal_error")
SHUTTING_DOWN = ApiError(
    503, "the gateway shut down before the answer was complete; retry", "shutting_down"
)
