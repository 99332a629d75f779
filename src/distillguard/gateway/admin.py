"""The admin API: keys, risk tiers and limits over HTTP, for the operators' tooling.

Guarded by one Bearer token (``gateway.admin_token``) compared in constant
time; without a configured token the API answers 403 to everyone. Every
change is written to the store and then the key ring is reloaded at once, so
this replica applies it on the next request and the others within their
refresh interval. The token is checked by route middleware (`AdminAuth`); errors are answered
once, by the gateway app, in OpenAI's shape (store errors through `EXCEPTION_HANDLERS`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated

from msgspec import Meta, Struct
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, ExceptionHandler, Receive, Scope, Send

from distillguard.exchange.privacy import ExchangeError
from distillguard.exchange.watchlist import Watchlist
from distillguard.gateway import protocol
from distillguard.gateway.auth import KeyRing, bearer_matches
from distillguard.gateway.clients import Network, client_address
from distillguard.gateway.errors import ApiError
from distillguard.gateway.http import error_response, read_body
from distillguard.policy import MAX_LIMIT, Limits, Tier
from distillguard.store import AccountError, AccountStore, UnknownIdError
from distillguard.store.accounts import MAX_ID_LENGTH

ADMIN_BODY_LIMIT = 64 * 1024


class LimitsBody(Struct, forbid_unknown_fields=True, kw_only=True):
    """Requests/min, tokens/min, tokens/day, concurrency; null or absent: the default."""

    rpm: Annotated[int, Meta(ge=1, le=MAX_LIMIT["rpm"])] | None = None
    tpm: Annotated[int, Meta(ge=1, le=MAX_LIMIT["tpm"])] | None = None
    tpd: Annotated[int, Meta(ge=1, le=MAX_LIMIT["tpd"])] | None = None
    concurrency: Annotated[int, Meta(ge=1, le=MAX_LIMIT["concurrency"])] | None = None

    def limits(self) -> Limits:
        return Limits(rpm=self.rpm, tpm=self.tpm, tpd=self.tpd, concurrency=self.concurrency)


Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LENGTH)]


class IssueKeyBody(LimitsBody, forbid_unknown_fields=True, kw_only=True):
    account: Id
    org: Id | None = None
    name: Id | None = None


class TierBody(Struct, forbid_unknown_fields=True):
    tier: Tier
    reason: str | None = None


class IdentifiersBody(Struct, forbid_unknown_fields=True, kw_only=True):
    """An account's identifiers, given at signup: hashed with the consortium key, never kept."""

    email: list[str] = []
    phone: list[str] = []
    payment: list[str] = []

    def pairs(self) -> list[tuple[str, str]]:
        return [
            (kind, value) for kind in ("email", "phone", "payment") for value in getattr(self, kind)
        ]


class AdminApi:
    def __init__(
        self,
        accounts: AccountStore,
        keys: KeyRing,
        token: str | None,
        watchlist: Watchlist | None = None,
        trusted_proxies: Sequence[Network] = (),
    ) -> None:
        self.accounts = accounts
        self.keys = keys
        self.token = token
        self.watchlist = watchlist  # None: no consortium key ring, so no identifiers
        self.trusted_proxies = trusted_proxies

    def routes(self) -> list[Route]:
        """The admin routes, each behind the token check (`AdminAuth`). On the routes, not
        on a mount: an unknown path or method is answered 404/405 as anywhere else, and
        ``/admin`` is no redirect."""
        guard = [Middleware(AdminAuth, token=self.token)]
        return [
            Route(f"/admin{path}", endpoint, methods=[method], middleware=guard)
            for path, method, endpoint in (
                ("/keys", "POST", self.issue_key),
                ("/keys", "GET", self.list_keys),
                ("/keys/{key_id}", "DELETE", self.revoke_key),
                ("/accounts/{owner_id}/tier", "PUT", self.set_tier),
                ("/accounts/{owner_id}/limits", "PUT", self.set_account_limits),
                ("/orgs/{owner_id}/limits", "PUT", self.set_org_limits),
                ("/accounts/{owner_id}/identifiers", "PUT", self.identify),
            )
        ]

    async def issue_key(self, request: Request) -> Response:
        body, _ = protocol.decode(await _read(request), IssueKeyBody)
        issued = await asyncio.to_thread(
            self.accounts.issue_key, body.account, body.org, body.limits(), body.name
        )
        await self.keys.refresh()
        return JSONResponse({"api_key": issued.api_key, **issued.record.public()}, 201)

    async def list_keys(self, request: Request) -> Response:
        records = await asyncio.to_thread(self.accounts.list_keys)
        return JSONResponse({"object": "list", "data": [r.public() for r in records]})

    async def revoke_key(self, request: Request) -> Response:
        record = await asyncio.to_thread(self.accounts.revoke_key, request.path_params["key_id"])
        await self.keys.refresh()
        return JSONResponse(record.public())

    async def set_tier(self, request: Request) -> Response:
        body, _ = protocol.decode(await _read(request), TierBody)
        owner = request.path_params["owner_id"]
        actor = f"admin API {client_host(request, self.trusted_proxies)}"
        await asyncio.to_thread(self.accounts.set_tier, owner, body.tier, body.reason, actor=actor)
        await self.keys.refresh()
        return JSONResponse({"account_id": owner, "tier": body.tier, "reason": body.reason})

    async def set_account_limits(self, request: Request) -> Response:
        return await self._set_limits(request, "account")

    async def set_org_limits(self, request: Request) -> Response:
        return await self._set_limits(request, "org")

    async def _set_limits(self, request: Request, level: str) -> Response:
        body, _ = protocol.decode(await _read(request), LimitsBody)
        owner = request.path_params["owner_id"]
        await asyncio.to_thread(self.accounts.set_limits, level, owner, body.limits())
        await self.keys.refresh()
        return JSONResponse({f"{level}_id": owner, "limits": body.limits().columns()})

    async def identify(self, request: Request) -> Response:
        """Record a (new) account's identifiers and match them against the watchlist at
        once, so that a match has raised its tier before its first request."""
        body, _ = protocol.decode(await _read(request), IdentifiersBody)
        if self.watchlist is None:
            raise ApiError(
                400,
                "identifiers need the consortium key ring: set exchange.keyring",
                "exchange_not_configured",
            )
        owner = request.path_params["owner_id"]
        found = await asyncio.to_thread(self.watchlist.identify, owner, body.pairs())
        await self.keys.refresh()
        tier, reason = await asyncio.to_thread(self.accounts.account_tier, owner)
        return JSONResponse(
            {
                "account_id": owner,
                "identifiers": len(body.pairs()),
                "matches": [
                    {
                        "indicator_id": m.indicator_id,
                        "kind": m.kind,
                        "confidence": round(m.confidence, 4),
                        "members": m.members,
                    }
                    for m in found
                ],
                "tier": tier,
                "tier_reason": reason,
            }
        )


async def _read(request: Request) -> bytes:
    return await read_body(request, ADMIN_BODY_LIMIT)


def client_host(request: Request, trusted_proxies: Sequence[Network] = ()) -> str:
    """Where an operator's request came from (the audit trail, sign-in limits): behind a
    proxy of ours, the address it saw (`gateway.trusted_proxies`), as the gateway reads it."""
    peer = request.client.host if request.client else None
    found = client_address(peer, request.headers.get("x-forwarded-for"), trusted_proxies)
    return found or "unknown"


class AdminAuth:
    """The admin token, checked before an admin endpoint runs (after routing)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(Headers(scope=scope).get("authorization"))
            if refusal is not None:
                await error_response(refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, authorization: str | None) -> ApiError | None:
        if self.token is None:
            return ApiError(
                403,
                "the admin API is disabled: set gateway.admin_token to enable it",
                "admin_disabled",
            )
        if not bearer_matches(authorization, self.token):
            return ApiError(401, "invalid or missing admin token", "invalid_admin_token")
        return None


async def _unknown_id(request: Request, exc: Exception) -> Response:
    return error_response(ApiError(404, str(exc), "not_found"))


async def _invalid(request: Request, exc: Exception) -> Response:
    return error_response(ApiError(400, str(exc), "invalid_request"))


# How the gateway app answers what the stores raise on the admin routes' behalf.
EXCEPTION_HANDLERS: dict[type[Exception], ExceptionHandler] = {
    UnknownIdError: _unknown_id,
    AccountError: _invalid,
    ExchangeError: _invalid,
}
