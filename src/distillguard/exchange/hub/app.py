"""The hub's TAXII 2.1 HTTP API (Starlette): one API root, `/api/`.

    GET  /taxii2/                                        discovery (no token needed)
    GET  /api/                                           API root information
    GET  /api/collections/                               the collections a member may use
    GET  /api/collections/{id}/                          one of them
    GET  /api/collections/{id}/objects/                  objects (filters, paging)
    POST /api/collections/{id}/objects/                  add an envelope of objects
    GET  /api/collections/{id}/objects/{object_id}/      one object's versions
    GET  /api/collections/{id}/objects/{object_id}/versions/
    GET  /api/collections/{id}/manifest/
    GET  /api/status/{status_id}/

Every endpoint but discovery needs a member's token: `Authorization: Bearer <token>`,
or HTTP Basic with the member name and the token as password (what `taxii2-client`
sends). A collection a member has no right on does not exist for it (404).
"""

from __future__ import annotations

import asyncio
import base64
import os
from urllib.parse import urlsplit

import msgspec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from distillguard.exchange.hub.records import Collection, Member, Page
from distillguard.exchange.hub.store import TITLE, HubError, HubStore, hub_identity
from distillguard.exchange.hub.taxii import (
    STIX,
    TAXII,
    TaxiiError,
    accepts_taxii,
    is_taxii,
    parse_query,
    read_envelope,
)
from distillguard.exchange.stixfields import now_us, taxii_time

MAX_CONTENT = 10 * 1024 * 1024  # bytes a POST may carry
ANONYMOUS_HEADER = "X-Distillguard-Anonymous"


BASE_URL_ENV = "DISTILLGUARD_HUB_URL"  # the hub's public URL, e.g. https://hub.example:9400


def api_root_url(base_url: str | None = None) -> str:
    """The API root discovery advertises: under the configured public URL, else relative
    (`/api/`, which clients resolve against the discovery URL they used). Never built
    from the request's Host header, which any client sets to anything."""
    base = base_url if base_url is not None else os.environ.get(BASE_URL_ENV, "")
    if not base:
        return "/api/"
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise HubError(f"{BASE_URL_ENV}={base!r} is not an http(s) URL such as https://hub:9400")
    return base.rstrip("/") + "/api/"


class Hub:
    def __init__(self, store: HubStore, title: str = TITLE, base_url: str | None = None) -> None:
        self.store = store
        self.title = title
        self.root = api_root_url(base_url)
        # Anonymous publishers' objects, and the hub's corroboration sightings, are
        # created by the hub itself.
        self.identity = hub_identity(title)

    # -- plumbing ------------------------------------------------------------------------

    def _collection(self, member: Member, collection_id: str, right: str) -> Collection:
        collection = self.store.collection(member, collection_id)
        if collection is None:
            raise TaxiiError(404, "no such collection", f"collection {collection_id} not found")
        if not getattr(collection, f"can_{right}"):
            self.store.audit_refusal(member, collection_id, f"no {right} right")
            raise TaxiiError(403, "forbidden", f"this member may not {right} this collection")
        return collection

    # -- endpoints -----------------------------------------------------------------------

    def discovery(self, request: Request) -> Response:
        return _taxii(
            {
                "title": self.title,
                "description": "Distillation signals shared between model providers.",
                "default": self.root,
                "api_roots": [self.root],
            }
        )

    def api_root(self, request: Request) -> Response:
        return _taxii(
            {
                "title": self.title,
                "description": "STIX 2.1 indicators of adversarial distillation.",
                "versions": [TAXII],
                "max_content_length": MAX_CONTENT,
            }
        )

    def collections(self, request: Request) -> Response:
        member = _member(request)
        # Tells an anonymous member's client (the first thing it reads) not to send its
        # identity: the hub would not store it anyway.
        headers = {ANONYMOUS_HEADER: "true"} if member.anonymous else None
        collections = [_collection(c) for c in self.store.collections_of(member)]
        return _taxii({"collections": collections}, headers)

    def collection(self, request: Request) -> Response:
        member = _member(request)
        found = self.store.collection(member, request.path_params["collection_id"])
        if found is None:
            raise TaxiiError(404, "no such collection", "collection not found")
        return _taxii(_collection(found))

    def get_objects(self, request: Request) -> Response:
        member = _member(request)
        collection_id = request.path_params["collection_id"]
        self._collection(member, collection_id, "read")
        object_id = request.path_params.get("object_id")
        page = self.store.page(
            member, collection_id, parse_query(request.query_params, object_id=object_id)
        )
        if object_id and not page.rows:
            raise TaxiiError(404, "no such object", f"{object_id} not found in this collection")
        self.store.audit_read(member, collection_id, "objects", len(page.rows))
        body = b'{"more":%s,%s"objects":[%s]}' % (
            b"true" if page.more else b"false",
            b'"next":%s,' % msgspec.json.encode(page.next) if page.next else b"",
            b",".join(obj.body.encode() for _, _, obj in page.rows),
        )
        return Response(body, media_type=TAXII, headers=_added_headers(page))

    def versions(self, request: Request) -> Response:
        member = _member(request)
        collection_id = request.path_params["collection_id"]
        self._collection(member, collection_id, "read")
        query = parse_query(request.query_params, object_id=request.path_params["object_id"])
        query.versions = ["all"]
        page = self.store.page(member, collection_id, query)
        if not page.rows:
            raise TaxiiError(404, "no such object", "object not found in this collection")
        envelope = {"more": page.more, "versions": [o.version for _, _, o in page.rows]}
        if page.next:
            envelope["next"] = page.next
        return _taxii(envelope, _added_headers(page))

    def manifest(self, request: Request) -> Response:
        member = _member(request)
        collection_id = request.path_params["collection_id"]
        self._collection(member, collection_id, "read")
        page = self.store.page(member, collection_id, parse_query(request.query_params))
        envelope: dict = {
            "more": page.more,
            "objects": [
                {
                    "id": o.object_id,
                    "date_added": taxii_time(added),
                    "version": o.version,
                    "media_type": STIX,
                }
                for added, _, o in page.rows
            ],
        }
        if page.next:
            envelope["next"] = page.next
        return _taxii(envelope, _added_headers(page))

    async def post_objects(self, request: Request) -> Response:
        member = _member(request)
        collection_id = request.path_params["collection_id"]
        self._collection(member, collection_id, "write")
        if not is_taxii(request.headers.get("content-type")):
            raise TaxiiError(415, "unsupported media type", f"send Content-Type: {TAXII}")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_CONTENT:
            raise TaxiiError(413, "too large", f"envelopes are limited to {MAX_CONTENT} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_CONTENT:
                raise TaxiiError(413, "too large", f"envelopes are limited to {MAX_CONTENT} bytes")
        # Parsing, validation and storage take time in proportion to the envelope (up to
        # 10 MiB): on a worker thread, so that one member's envelope never holds the event
        # loop, and with it every other member's requests.
        status = await asyncio.to_thread(self._ingest, member, collection_id, bytes(body))
        return _taxii(status, status_code=202)

    def _ingest(self, member: Member, collection_id: str, body: bytes) -> dict:
        author = self.identity if member.anonymous else None
        try:
            stored = read_envelope(body, taxii_time(now_us()), author)
        except TaxiiError as exc:
            self.store.audit_refusal(member, collection_id, exc.description[:500])
            raise
        return self.store.add_objects(member, collection_id, stored, identity=self.identity)

    def status(self, request: Request) -> Response:
        member = _member(request)
        found = self.store.status(member, request.path_params["status_id"])
        if found is None:
            raise TaxiiError(404, "no such status", "status not found")
        return _taxii(found)


def create_app(store: HubStore, title: str = TITLE, base_url: str | None = None) -> Starlette:
    hub = Hub(store, title, base_url)
    anyone = [Middleware(_AcceptsTaxii)]
    members = [*anyone, Middleware(_MembersOnly, store=store)]
    collection = "/api/collections/{collection_id}"
    routes = [
        Route("/taxii2/", hub.discovery, methods=["GET"], middleware=anyone),
        *(
            Route(path, endpoint, methods=[method], middleware=members)
            for path, method, endpoint in (
                ("/api/", "GET", hub.api_root),
                ("/api/collections/", "GET", hub.collections),
                (f"{collection}/", "GET", hub.collection),
                (f"{collection}/objects/", "GET", hub.get_objects),
                (f"{collection}/objects/", "POST", hub.post_objects),
                (f"{collection}/objects/{{object_id}}/", "GET", hub.get_objects),
                (f"{collection}/objects/{{object_id}}/versions/", "GET", hub.versions),
                (f"{collection}/manifest/", "GET", hub.manifest),
                ("/api/status/{status_id}/", "GET", hub.status),
            )
        ),
    ]
    handlers = {TaxiiError: _taxii_error, 404: _not_found, 405: _not_allowed}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.hub = hub
    return app


# -- at the edge: negotiation, members, errors ----------------------------------------------

_MEMBER = "distillguard.hub.member"  # the scope key _MembersOnly sets


class _AcceptsTaxii:
    """TAXII content negotiation, before any endpoint runs (an unknown path or method is
    answered as such whatever it accepts)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not accepts_taxii(Headers(scope=scope).get("accept")):
            raise TaxiiError(406, "not acceptable", f"this server answers {TAXII}")
        await self.app(scope, receive, send)


class _MembersOnly:
    """The member a request's token belongs to, found before the endpoint runs (which
    reads it with `_member`); a request without a valid token is answered 401."""

    def __init__(self, app: ASGIApp, store: HubStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = _token(Headers(scope=scope).get("authorization", ""))
        # (on a worker thread: the store is synchronous)
        member = await run_in_threadpool(self.store.member_for, token) if token else None
        if member is None:
            raise TaxiiError(401, "unauthorised", "a valid member token is required")
        scope[_MEMBER] = member
        await self.app(scope, receive, send)


def _member(request: Request) -> Member:
    return request.scope[_MEMBER]


def _token(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            _, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return password or None
    return None


def _collection(c: Collection) -> dict:
    return {
        "id": c.collection_id,
        "title": c.name,
        "description": c.description or "",
        "can_read": c.can_read,
        "can_write": c.can_write,
        "media_types": [STIX],
    }


def _added_headers(page: Page) -> dict[str, str]:
    if not page.rows:
        return {}
    return {
        "X-TAXII-Date-Added-First": taxii_time(page.rows[0][0]),
        "X-TAXII-Date-Added-Last": taxii_time(page.rows[-1][0]),
    }


def _taxii(content: dict, headers: dict[str, str] | None = None, status_code: int = 200):
    return Response(msgspec.json.encode(content), status_code, headers, media_type=TAXII)


def _error(error: TaxiiError) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="taxii"'} if error.status == 401 else {}
    return Response(error.body(), error.status, headers=headers, media_type=TAXII)


async def _taxii_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TaxiiError)
    return _error(exc)


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(TaxiiError(404, "not found", request.url.path))


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return _error(TaxiiError(405, "method not allowed", f"{request.method} {request.url.path}"))
