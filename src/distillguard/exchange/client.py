"""One collection at the hub, over TAXII 2.1 through the OASIS `taxii2-client`.

The hub is any TAXII 2.1 server (ours: `distillguard hub serve`); a member
authenticates with HTTP Basic, its token as the password. Pages are read with
`added_after` from where the last pull stopped (the server's
`X-TAXII-Date-Added-Last`), so every pull fetches only what is new.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import requests
from taxii2client.common import _HTTPConnection
from taxii2client.exceptions import TAXIIServiceException
from taxii2client.v21 import ApiRoot, Collection, as_pages

from distillguard.config import ExchangeSettings
from distillguard.exchange.privacy import ExchangeError

PAGE_SIZE = 1000
ENVELOPE_SIZE = 1000  # objects per POST: well under the hub's 10 MiB envelope limit
ANONYMOUS_HEADER = "X-Distillguard-Anonymous"  # the hub's word that it shows us as itself
USER = "distillguard"  # Basic auth's user name; the token (the password) says who we are


@dataclass
class Posted:
    """The hub's status of what one publish sent."""

    accepted: set[str] = field(default_factory=set)  # ids of the objects the hub took
    failures: list[str] = field(default_factory=list)  # "<object id>: <message>"
    error: ExchangeError | None = None  # why posting stopped early, if it did


class HubClient:
    def __init__(self, hub: str, collection: str, token: str) -> None:
        self.hub = hub
        self._last_added: str | None = None
        self.anonymous = False  # the hub shows us as itself: send no identity of ours
        # One connection for every endpoint (the library's way to share a session), with a
        # hook that reads the paging headers its methods do not return.
        self._conn = _HTTPConnection(user=USER, password=token, version="2.1")
        self._conn.session.hooks["response"].append(self._remember)
        self.collection = self._find(collection)

    @classmethod
    def from_settings(cls, settings: ExchangeSettings) -> HubClient:
        missing = [
            f"exchange.{name}"
            for name in ("hub", "collection", "token")
            if getattr(settings, name) is None
        ]
        if missing:
            raise ExchangeError(f"the exchange needs {', '.join(missing)} (settings)")
        assert settings.hub and settings.collection and settings.token
        return cls(settings.hub, settings.collection, settings.token.get_secret_value())

    @property
    def url(self) -> str:
        return self.collection.url

    def pages(self, added_after: str | None) -> Iterator[list[dict]]:
        """The collection's objects added after `added_after`, a page at a time; after each
        page `last_added` is where a later pull may resume."""
        filters = {"added_after": added_after} if added_after else {}
        pages = as_pages(self.collection.get_objects, per_request=PAGE_SIZE, **filters)
        while True:
            with self._errors("reading"):
                envelope = next(pages, None)
            if envelope is None:
                return
            yield envelope.get("objects", [])

    @property
    def last_added(self) -> str | None:
        return self._last_added

    def publish(self, objects: Sequence[dict]) -> Posted:
        """POST `objects` in envelopes (the hub takes an envelope whole or not at all);
        stops at the first envelope that fails and says what was taken until then."""
        posted = Posted()
        if self.anonymous:
            objects = _unnamed(objects)
        for start in range(0, len(objects), ENVELOPE_SIZE):
            envelope = json.dumps({"objects": list(objects[start : start + ENVELOPE_SIZE])})
            try:
                with self._errors("publishing"):
                    status = self.collection.add_objects(envelope)  # waits while pending
            except ExchangeError as exc:
                posted.error = exc
                break
            posted.accepted |= {s.get("id") for s in status.successes or []}
            posted.failures += [f"{f.get('id')}: {f.get('message')}" for f in status.failures or []]
        return posted

    def _find(self, wanted: str) -> Collection:
        root = ApiRoot(self.hub, conn=self._conn)
        with self._errors("listing collections"):
            collections = root.collections
        for collection in collections:
            if wanted in (collection.id, collection.title):
                return collection
        names = ", ".join(repr(c.title) for c in collections) or "none"
        raise ExchangeError(f"the hub has no collection {wanted!r} for us (we may use: {names})")

    def _remember(self, response: requests.Response, *args, **kwargs) -> None:
        last = response.headers.get("X-TAXII-Date-Added-Last")
        if last:
            self._last_added = last
        if response.headers.get(ANONYMOUS_HEADER) == "true":
            self.anonymous = True

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """What the client library raises, as one clear ExchangeError line."""
        where = f"hub {self.hub} ({doing})"
        try:
            yield
        except requests.HTTPError as exc:
            raise ExchangeError(f"{where}: {_taxii_error(exc.response)}") from None
        except requests.ConnectionError:
            raise ExchangeError(f"{where}: cannot connect") from None
        except (requests.RequestException, TAXIIServiceException, ValueError) as exc:
            raise ExchangeError(f"{where}: {exc}") from None


def _unnamed(objects: Sequence[dict]) -> list[dict]:
    """`objects` without the identities they are created by (ours), nor references to
    them: what an anonymous member sends."""
    ours = {o.get("created_by_ref") for o in objects} - {None}
    kept = []
    for obj in objects:
        if obj.get("type") == "identity" and obj.get("id") in ours:
            continue
        if obj.get("created_by_ref") in ours:
            obj = {k: v for k, v in obj.items() if k != "created_by_ref"}
        kept.append(obj)
    return kept


def _taxii_error(response: requests.Response | None) -> str:
    """`HTTP 403: <title> (<description>)` from a TAXII error resource, when there is one."""
    if response is None:
        return "no response"
    try:
        body = response.json()
    except ValueError:
        body = {}
    title = body.get("title") if isinstance(body, dict) else None
    text = f"HTTP {response.status_code}: {title or response.reason}"
    if isinstance(body, dict) and body.get("description"):
        text += f" ({body['description']})"
    return text
