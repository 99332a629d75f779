"""The operators' console at `/admin/`: accounts by risk with their evidence, tier changes
(audited), operations as graphs, limit decisions, suspect tests, hub sync and metrics.

Server-rendered HTML (Jinja2, autoescaped) with one stylesheet the gateway serves itself:
no script, no CDN, works offline. Every page is also JSON: with the admin token as a Bearer
header (or `?format=json` in a signed-in browser) a page answers the data it renders.

Signing in exchanges the admin token for a session cookie: an expiry signed with the token
(HMAC-SHA256), HttpOnly, SameSite=Strict, scoped to /admin/, so a new token ends every
session. Forms carry a CSRF token derived from the session as well. Failed sign-ins are
limited per client address, so the token cannot be guessed at the gateway's speed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import parse_qs, quote

import msgspec
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from distillguard.gateway.admin import client_host
from distillguard.gateway.auth import KeyRing, bearer_matches
from distillguard.gateway.clients import Network
from distillguard.gateway.console.views import Views
from distillguard.gateway.errors import ApiError
from distillguard.gateway.http import read_body
from distillguard.policy import TIERS
from distillguard.store import UnknownIdError

COOKIE = "distillguard_console"
SESSION_SECONDS = 8 * 3600
FORM_LIMIT = 8 * 1024
MAX_REASON = 500
# Failed sign-ins allowed per client address per minute; addresses remembered at most.
FAILURES_PER_MINUTE = 5
FAILURE_HOSTS = 10_000
HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
NAV = [
    ("overview", "/admin/", "Overview"),
    ("accounts", "/admin/accounts", "Accounts"),
    ("operations", "/admin/operations", "Operations"),
    ("limits", "/admin/limits", "Limits"),
    ("suspects", "/admin/suspects", "Suspect tests"),
    ("hub", "/admin/hub", "Hub"),
    ("metrics", "/admin/metrics", "Metrics"),
]

View = Callable[[Request], dict[str, Any]]


def id_url(value: object) -> str:
    """An id as one URL path segment (account ids may hold `/`, `?`, `#`)."""
    return quote(str(value), safe="")


class Console:
    def __init__(
        self,
        engine: Engine,
        keys: KeyRing,
        token: str | None,
        trusted_proxies: Sequence[Network] = (),
    ) -> None:
        self.views = Views(engine)
        self.keys = keys
        self.token = token
        self.trusted_proxies = trusted_proxies
        self.templates = Environment(
            loader=PackageLoader("distillguard.gateway.console"),
            autoescape=select_autoescape(default=True),
        )
        self.templates.filters["when"] = _when
        self.templates.filters["p"] = _p
        self.templates.filters["id_url"] = id_url
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def routes(self) -> list[BaseRoute]:
        pages: list[tuple[str, str, View]] = [
            ("/admin/", "overview", lambda r: self.views.overview()),
            ("/admin/accounts", "accounts", self._accounts),
            ("/admin/accounts/{account_id:path}", "account", self._account),
            ("/admin/operations", "operations", lambda r: self.views.operations()),
            ("/admin/operations/{cluster_id}", "operation", self._operation),
            ("/admin/limits", "limits", lambda r: self.views.limits()),
            ("/admin/suspects", "suspects", lambda r: self.views.suspect_tests()),
            ("/admin/hub", "hub", lambda r: self.views.hub()),
            ("/admin/metrics", "metrics", lambda r: self.views.metrics()),
        ]
        return [
            *(Route(path, self._page(name, view), methods=["GET"]) for path, name, view in pages),
            Route("/admin/login", self.login_form, methods=["GET"]),
            Route("/admin/login", self.login, methods=["POST"]),
            Route("/admin/logout", self.logout, methods=["POST"]),
            Route("/admin/accounts/{account_id:path}/tier", self.change_tier, methods=["POST"]),
            Mount(
                "/admin/static", StaticFiles(packages=[("distillguard.gateway.console", "static")])
            ),
        ]

    # -- pages ----------------------------------------------------------------------------

    def _page(self, name: str, view: View) -> Callable[[Request], Awaitable[Response]]:
        async def page(request: Request) -> Response:
            how = self._signed_in(request)
            if how is None:
                return self._refused(request)
            as_json = how == "bearer" or request.query_params.get("format") == "json"
            try:
                data = await asyncio.to_thread(view, request)
            except (ApiError, UnknownIdError) as exc:
                if as_json:
                    raise  # answered by the app in the API's shape
                if isinstance(exc, ApiError):
                    return self._render(
                        "error", request, exc.status, code=exc.status, message=exc.message
                    )
                return self._render("error", request, 404, code=404, message=str(exc))
            if as_json:
                return Response(msgspec.json.encode(data), media_type="application/json")
            return self._render(name, request, **data)

        return page

    def _accounts(self, request: Request) -> dict[str, Any]:
        params = request.query_params
        tier = params.get("tier") or None
        if tier is not None:
            _check_tier(tier)
        page = params.get("page", "1")
        if not page.isdigit() or not 1 <= int(page) <= 1_000_000:
            raise ApiError(400, "page must be a whole number from 1", "invalid_request")
        prefix = (params.get("q") or "")[:128] or None
        return self.views.accounts_page(tier, prefix, int(page))

    def _account(self, request: Request) -> dict[str, Any]:
        return self.views.account(request.path_params["account_id"])

    def _operation(self, request: Request) -> dict[str, Any]:
        found = self.views.operation(request.path_params["cluster_id"])
        if found is None:
            raise UnknownIdError(
                f"no cluster {request.path_params['cluster_id']!r} in the latest trace run"
            )
        return found

    # -- changes --------------------------------------------------------------------------

    async def change_tier(self, request: Request) -> Response:
        """The account page's form: set the tier, with a reason, under the session (and
        its CSRF token); recorded in the audit trail as the console at the client's address."""
        form = await self._form(request)
        if self._signed_in(request, cookie_only=True) is None or not hmac.compare_digest(
            form.get("csrf", ""), self._csrf(request)
        ):
            raise ApiError(403, "sign in to the console and use its form", "invalid_session")
        account = request.path_params["account_id"]
        tier = form.get("tier", "")
        _check_tier(tier)
        reason = form.get("reason", "").strip()
        if not reason:
            raise ApiError(
                400,
                "say why the tier changes: the reason is kept in the audit trail",
                "invalid_request",
            )
        actor = f"console {client_host(request, self.trusted_proxies)}"
        await asyncio.to_thread(
            self.views.accounts.set_tier, account, tier, reason[:MAX_REASON], actor=actor
        )
        await self.keys.refresh()  # this replica applies it on the next request
        return RedirectResponse(f"/admin/accounts/{quote(account, safe='')}", 303, HEADERS)

    # -- signing in -----------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        return self._render("login", request, next=_local(request.query_params.get("next")))

    async def login(self, request: Request) -> Response:
        form = await self._form(request)
        target = _local(form.get("next"))
        if self.token is None:
            return self._render(
                "login",
                request,
                403,
                next=target,
                error="The console is disabled: set gateway.admin_token.",
            )
        host = client_host(request, self.trusted_proxies)
        if self._too_many_failures(host):
            return self._render(
                "login", request, 429, next=target, error="Too many failed sign-ins: wait a minute."
            )
        if not hmac.compare_digest(form.get("token", "").encode(), self.token.encode()):
            self._failed(host)
            return self._render(
                "login", request, 401, next=target, error="That is not the admin token."
            )
        expires = int(time.time()) + SESSION_SECONDS
        response = RedirectResponse(target, 303, HEADERS)
        response.set_cookie(
            COOKIE,
            f"{expires}.{self._sign(f'session:{expires}')}",
            max_age=SESSION_SECONDS,
            path="/admin/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/admin/login", 303, HEADERS)
        response.delete_cookie(COOKIE, path="/admin/")
        return response

    def _signed_in(self, request: Request, cookie_only: bool = False) -> str | None:
        """ "bearer" or "session" for a valid admin token or session; None otherwise."""
        if self.token is None:
            return None
        if not cookie_only and bearer_matches(request.headers.get("authorization"), self.token):
            return "bearer"
        expires, _, signature = request.cookies.get(COOKIE, "").partition(".")
        if not expires.isdigit() or int(expires) < time.time():
            return None
        return (
            "session" if hmac.compare_digest(signature, self._sign(f"session:{expires}")) else None
        )

    def _refused(self, request: Request) -> Response:
        """Not signed in: a browser is sent to sign in, a script gets the API's error."""
        if "text/html" in request.headers.get("accept", "") and self.token is not None:
            back = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
            return RedirectResponse(f"/admin/login?next={back}", 303, HEADERS)
        if self.token is None:
            raise ApiError(
                403,
                "the admin API is disabled: set gateway.admin_token to enable it",
                "admin_disabled",
            )
        raise ApiError(401, "invalid or missing admin token", "invalid_admin_token")

    def _sign(self, message: str) -> str:
        assert self.token is not None
        return hmac.new(self.token.encode(), message.encode(), hashlib.sha256).hexdigest()

    def _csrf(self, request: Request) -> str:
        return self._sign(f"csrf:{request.cookies.get(COOKIE, '')}")

    def _too_many_failures(self, host: str) -> bool:
        recent = self._failures.get(host)
        if recent is None:
            return False
        while recent and recent[0] < time.monotonic() - 60:
            recent.popleft()
        return len(recent) >= FAILURES_PER_MINUTE

    def _failed(self, host: str) -> None:
        self._failures.setdefault(host, deque()).append(time.monotonic())
        self._failures.move_to_end(host)
        while len(self._failures) > FAILURE_HOSTS:
            self._failures.popitem(last=False)

    # -- plumbing -------------------------------------------------------------------------

    async def _form(self, request: Request) -> dict[str, str]:
        """A urlencoded form, each field's first value; bounded like every admin body."""
        body = await read_body(request, FORM_LIMIT)
        try:
            fields = parse_qs(body.decode(), max_num_fields=16, strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "the form is not urlencoded UTF-8", "invalid_request") from None
        return {name: values[0] for name, values in fields.items()}

    def _render(self, name: str, request: Request, status: int = 200, **data: Any) -> Response:
        signed_in = self._signed_in(request, cookie_only=True) is not None
        html = self.templates.get_template(f"{name}.html").render(
            nav=NAV,
            current=name,
            signed_in=signed_in,
            csrf=self._csrf(request) if signed_in else "",
            # This very page (its filters and page number kept) as JSON.
            json_href="?" + str(request.url.include_query_params(format="json").query),
            **data,
        )
        return Response(html, status, HEADERS, media_type="text/html")


def _check_tier(tier: str) -> None:
    if tier not in TIERS:
        raise ApiError(
            400, f"unknown tier {tier!r}: choose one of {', '.join(TIERS)}", "invalid_request"
        )


def _local(target: str | None) -> str:
    """Where to go after signing in: a console path, never another site."""
    if (
        target
        and target.startswith("/admin/")
        and not target.startswith("//")
        and "\\" not in target
    ):
        return target
    return "/admin/"


def _when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _p(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"
