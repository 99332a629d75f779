"""The gateway's OpenAPI 3.1 document, generated from the structs that validate requests.

One source of truth: the msgspec structs in `protocol` and `admin` decide both
what the gateway accepts and what this schema declares, so the two cannot
drift (and schemathesis can fuzz the gateway from it; see tests/test_openapi.py).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from distillguard import __version__
from distillguard.gateway import admin, protocol

REF = "#/components/schemas/{name}"

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

# Every refusal the gateway can make, by status (see errors.py).
REFUSALS = {
    "400": "Malformed JSON, invalid UTF-8 or an invalid field (`param` names it)",
    "401": "Missing, invalid or revoked API key",
    "403": "The account is blocked by policy",
    "404": "Unknown model",
    "413": "Body over the configured maximum",
    "429": "A rate limit refused the request; see the x-ratelimit-* and retry-after headers",
    "502": "The upstream failed or could not be reached",
    "504": "The upstream did not answer in time",
}
ADMIN_REFUSALS = {
    "400": "Malformed JSON or an invalid field (`param` names it)",
    "401": "Missing or wrong admin token",
    "403": "The admin API is disabled (no admin token configured)",
    "404": "No such key, account or organisation",
}


def _errors(statuses: dict[str, str]) -> dict[str, Any]:
    error = {"application/json": {"schema": {"$ref": REF.format(name="Error")}}}
    return {status: {"description": text, "content": error} for status, text in statuses.items()}


def _operation(
    summary: str,
    body: dict[str, Any] | None,
    ok: dict[str, Any],
    refusals: dict[str, str],
    security: str,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "security": [{security: []}],
        "responses": {**ok, **_errors(refusals)},
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return operation


def _json(description: str, status: str = "200") -> dict[str, Any]:
    return {status: {"description": description, "content": {"application/json": {}}}}


@cache
def openapi_document() -> dict[str, Any]:
    (chat, completion, embedding, responses, issue, tier, limits), schemas = (
        msgspec.json.schema_components(
            [
                protocol.ChatCompletionRequest,
                protocol.CompletionRequest,
                protocol.EmbeddingRequest,
                protocol.ResponsesRequest,
                admin.IssueKeyBody,
                admin.TierBody,
                admin.LimitsBody,
            ],
            ref_template=REF,
        )
    )
    streamed = {
        "200": {
            "description": "The answer, whole (JSON) or streamed (server-sent events)",
            "content": {"application/json": {}, "text/event-stream": {}},
        }
    }
    listing_refusals = {status: REFUSALS[status] for status in ("401", "502", "504")}
    owner = {"name": "owner_id", "in": "path", "required": True, "schema": {"type": "string"}}
    key_id = {"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}}
    paths = {
        "/v1/chat/completions": {
            "post": _operation("Chat completion", chat, streamed, REFUSALS, "apiKey")
        },
        "/v1/completions": {
            "post": _operation("Text completion", completion, streamed, REFUSALS, "apiKey")
        },
        "/v1/responses": {
            "post": _operation(
                "Response (the Responses API)", responses, streamed, REFUSALS, "apiKey"
            )
        },
        "/v1/embeddings": {
            "post": _operation(
                "Embeddings (passed through)", embedding, _json("Embeddings"), REFUSALS, "apiKey"
            )
        },
        "/v1/models": {
            "get": _operation(
                "Models served", None, _json("Model list"), listing_refusals, "apiKey"
            )
        },
        "/admin/keys": {
            "get": _operation(
                "List keys (never secrets)", None, _json("Keys"), ADMIN_REFUSALS, "adminToken"
            ),
            "post": _operation(
                "Issue a key; the secret is in this answer only",
                issue,
                _json("The new key", "201"),
                ADMIN_REFUSALS,
                "adminToken",
            ),
        },
        "/admin/keys/{key_id}": {
            "delete": {
                **_operation(
                    "Revoke a key", None, _json("The revoked key"), ADMIN_REFUSALS, "adminToken"
                ),
                "parameters": [key_id],
            }
        },
        "/admin/accounts/{owner_id}/tier": {
            "put": {
                **_operation(
                    "Set an account's risk tier",
                    tier,
                    _json("The new tier"),
                    ADMIN_REFUSALS,
                    "adminToken",
                ),
                "parameters": [owner],
            }
        },
        "/admin/accounts/{owner_id}/limits": {
            "put": {
                **_operation(
                    "Set an account's limits",
                    limits,
                    _json("The new limits"),
                    ADMIN_REFUSALS,
                    "adminToken",
                ),
                "parameters": [owner],
            }
        },
        "/admin/orgs/{owner_id}/limits": {
            "put": {
                **_operation(
                    "Set an organisation's limits",
                    limits,
                    _json("The new limits"),
                    ADMIN_REFUSALS,
                    "adminToken",
                ),
                "parameters": [owner],
            }
        },
        "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": _json("ok")}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "distillguard gateway", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": {**schemas, "Error": ERROR},
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer"},
                "adminToken": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def openapi_route() -> Route:
    async def document(request: Request) -> JSONResponse:
        return JSONResponse(openapi_document())

    return Route("/openapi.json", document, methods=["GET"])
