"""One event per gateway request: the record tracing and outside tools read.

`Event` mirrors the `events` table (schema.py) and `docs/events.md`; the
gateway fills it, `EventStore` writes batches of them and streams them back
out in insertion order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import msgspec
from sqlalchemy import JSON, BigInteger, Engine, Integer, String, func, select

from distillguard.store.schema import events


@dataclass
class Event:
    ts: float  # unix seconds when the request arrived
    request_id: str
    endpoint: str
    status: int
    latency_ms: float
    decision: str  # admitted | refused | blocked | rejected (bad request / auth)
    account_id: str | None = None
    org_id: str | None = None
    key_id: str | None = None
    client_ip: str | None = None
    user_agent: str | None = None
    model: str | None = None
    # Messages/prompt and parameters, as sent; while queued in the gateway, the JSON body
    # as bytes (see `decode_request`), since decoded objects cost many times their size.
    request: dict[str, Any] | bytes | None = None
    response_text: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    refused_by: str | None = None  # which limit refused (or would have, in shadow mode)
    tier: str | None = None
    shadow: bool = False
    stream: bool = False
    cohort: int | None = None
    error: str | None = None

    def decode_request(self) -> None:
        """Turn a request held as JSON bytes back into the object the store and readers take."""
        if isinstance(self.request, bytes):
            try:
                value = msgspec.json.decode(self.request)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                value = None  # the gateway decoded it before: only a bug could get here
            self.request = value if isinstance(value, dict) else None


# What a limit decision is, without what was asked or answered.
DECISION_COLUMNS = (
    "id",
    "ts",
    "account_id",
    "key_id",
    "endpoint",
    "status",
    "decision",
    "refused_by",
    "tier",
    "shadow",
)


class EventStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def write(self, batch: Sequence[Event]) -> None:
        """Insert a batch in one transaction: all of it or none of it."""
        if not batch:
            return
        for event in batch:
            event.decode_request()
        with self.engine.begin() as conn:
            conn.execute(events.insert(), [storable(e) for e in batch])

    def read(
        self,
        since: float | None = None,
        until: float | None = None,
        account_id: str | None = None,
        after_id: int = 0,
        chunk: int = 1000,
    ) -> Iterator[dict[str, Any]]:
        """Events (with their store `id`) in insertion order, streamed in chunks."""
        query = select(events).where(events.c.id > after_id).order_by(events.c.id)
        if since is not None:
            query = query.where(events.c.ts >= since)
        if until is not None:
            query = query.where(events.c.ts < until)
        if account_id is not None:
            query = query.where(events.c.account_id == account_id)
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=chunk).execute(query)
            # Plain `str` names: SQLAlchemy's keys are a str subclass some consumers refuse.
            names = tuple(map(str, result.keys()))
            for row in result:
                yield dict(zip(names, row, strict=True))

    def recent(
        self, limit: int = 50, account_id: str | None = None, refused_only: bool = False
    ) -> list[dict[str, Any]]:
        """The newest events' decisions (no prompts or answers), newest first; `refused_only`:
        those a limit or a tier refused, or would have in shadow mode."""
        query = select(*(events.c[name] for name in DECISION_COLUMNS)).order_by(events.c.id.desc())
        if account_id is not None:
            query = query.where(events.c.account_id == account_id)
        if refused_only:
            query = query.where(events.c.refused_by.is_not(None))
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query.limit(limit)).mappings()]

    def count(self) -> int:
        """Events stored."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(events)).scalar_one())

    def decision_counts(self, since: float) -> list[dict[str, Any]]:
        """Requests since `since` by decision, tier, shadow and the limit that refused."""
        columns = (events.c.decision, events.c.tier, events.c.shadow, events.c.refused_by)
        query = select(*columns, func.count().label("requests")).where(events.c.ts >= since)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query.group_by(*columns)).mappings()]


# Events carry what clients sent, and clients send anything. Every value is
# made to fit its column before the insert, so that one odd request can never
# fail a batch (on PostgreSQL: NUL characters, over-long strings, out-of-range
# integers); what was changed is documented in docs/events.md.
_INT_RANGE = {Integer: 2**31 - 1, BigInteger: 2**63 - 1}
# Which columns need which care, worked out once: this runs for every request.
_COLUMNS = [c for c in events.columns if c.name in {f.name for f in fields(Event)}]
_STRINGS = [(c.name, c.type.length) for c in _COLUMNS if isinstance(c.type, String)]
_INTS = [(c.name, _INT_RANGE[type(c.type)]) for c in _COLUMNS if type(c.type) in _INT_RANGE]
_JSONS = [c.name for c in _COLUMNS if isinstance(c.type, JSON)]


def storable(event: Event) -> dict[str, Any]:
    row = dict(vars(event))  # shallow: `_json` rebuilds the one nested value, `request`
    for name, length in _STRINGS:  # Text is a String without a length
        value = row[name]
        if value is not None and ("\x00" in value or (length and len(value) > length)):
            row[name] = _text(value)[:length]
    for name, most in _INTS:
        value = row[name]
        if value is not None and not -most - 1 <= value <= most:
            row[name] = max(-most - 1, min(most, value))
    for name in _JSONS:
        value = row[name]
        if value is not None and b"\\u0000" in msgspec.json.encode(value):
            row[name] = _json(value)
    return row


def _text(value: str) -> str:
    return value.replace("\x00", "\ufffd")  # PostgreSQL text cannot hold NUL


def _json(value: Any) -> Any:
    """A copy of `value` with NUL replaced in every string and key.

    Iterative: a client chooses the nesting, and recursion here would let one request
    raise RecursionError on the writer thread.
    """
    if isinstance(value, str):
        return _text(value)
    if not isinstance(value, dict | list):
        return value
    root = _shell(value)
    stack = [(value, root)]
    while stack:
        source, target = stack.pop()
        for key, item in source.items() if isinstance(source, dict) else enumerate(source):
            if isinstance(item, dict | list):
                copy = _shell(item)
                stack.append((item, copy))
                item = copy
            elif isinstance(item, str):
                item = _text(item)
            if isinstance(target, dict):
                target[_text(str(key))] = item
            else:
                target[key] = item
    return root


def _shell(container: dict | list) -> dict | list:
    return {} if isinstance(container, dict) else [None] * len(container)
