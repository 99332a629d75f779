"""The hub's records: collections, members and their rights, objects, statuses, audit.

Every read goes through `visible()`: the TLP rule (exchange/tlp.py) is a SQL condition,
so an object a member may not see is never loaded for it, let alone filtered late.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, and_, func, or_, select
from sqlalchemy.exc import IntegrityError

from distillguard.errors import DistillguardError
from distillguard.exchange.hub.schema import audit, collections, members, objects, rights, statuses
from distillguard.store.accounts import check_id, secret_digest

TOKEN_PREFIX = "dgx"
NAMESPACE = uuid.UUID("5b0e1c52-52a8-4a4b-8d43-1c2f0f6c9f5e")  # the hub's uuid5 namespace


class HubError(DistillguardError):
    """A hub command was given a name or right that cannot be used."""


@dataclass(frozen=True)
class Member:
    member_id: str
    org: str
    anonymous: bool


@dataclass(frozen=True)
class Collection:
    collection_id: str
    name: str
    description: str | None
    can_read: bool
    can_write: bool


@dataclass(frozen=True)
class StoredObject:
    """One version of an object as it is stored: enough to serve, page and list it."""

    object_id: str
    type: str
    version: str  # TAXII timestamp
    spec_version: str
    tlp: str | None
    body: str


@dataclass(frozen=True)
class Page:
    rows: list[tuple[int, int, StoredObject]]  # (added_us, seq, object)
    more: bool

    @property
    def next(self) -> str | None:
        if not self.more or not self.rows:
            return None
        added, seq, _ = self.rows[-1]
        return f"{added}-{seq}"


@dataclass
class Query:
    """The TAXII filters of one request (already parsed and checked)."""

    added_after_us: int | None = None
    ids: Sequence[str] = ()
    types: Sequence[str] = ()
    spec_versions: Sequence[str] = ()
    versions: Sequence[str] = ("last",)  # "last", "first", "all" or TAXII timestamps
    limit: int = 100
    after: tuple[int, int] | None = None  # the `next` cursor: (added_us, seq)


def taxii_time(us: int) -> str:
    """µs since the epoch as a TAXII timestamp (microsecond precision, UTC)."""
    moment = datetime.fromtimestamp(us / 1e6, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_us() -> int:
    return time.time_ns() // 1000


class HubStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- administration (the CLI) ------------------------------------------------------

    def add_collection(self, name: str, description: str | None = None) -> str:
        check_id("collection name", name)
        collection_id = str(uuid.uuid5(NAMESPACE, f"collection:{name}"))
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    collections.insert().values(
                        collection_id=collection_id,
                        name=name,
                        description=description,
                        created_at=time.time(),
                    )
                )
        except IntegrityError:
            raise HubError(f"a collection named {name!r} exists already") from None
        return collection_id

    def add_member(
        self,
        name: str,
        *,
        org: str | None = None,
        read: Sequence[str] = (),
        write: Sequence[str] = (),
        anonymous: bool = False,
        expires_days: float | None = None,
    ) -> str:
        """Register a member with rights on named collections; returns its bearer token
        (shown once: only its SHA-256 is kept)."""
        check_id("member name", name)
        if org is not None:
            check_id("organisation", org)
        if expires_days is not None and expires_days <= 0:
            raise HubError("--expires-days must be positive")
        token = f"{TOKEN_PREFIX}-{secrets.token_urlsafe(32)}"
        now = time.time()
        with self.engine.begin() as conn:
            known = dict(
                conn.execute(select(collections.c.name, collections.c.collection_id)).tuples().all()
            )
            unknown = sorted((set(read) | set(write)) - known.keys())
            if unknown:
                raise HubError(f"no such collection: {', '.join(unknown)} (hub collection add)")
            try:
                conn.execute(
                    members.insert().values(
                        member_id=name,
                        org=org or name,
                        token_sha256=secret_digest(token),
                        anonymous=anonymous,
                        created_at=now,
                        expires_at=now + expires_days * 86_400 if expires_days else None,
                    )
                )
            except IntegrityError:
                raise HubError(f"a member named {name!r} exists already") from None
            for collection in sorted(set(read) | set(write)):
                conn.execute(
                    rights.insert().values(
                        member_id=name,
                        collection_id=known[collection],
                        can_read=collection in read,
                        can_write=collection in write,
                    )
                )
        return token

    # -- requests ----------------------------------------------------------------------

    def member_for(self, token: str) -> Member | None:
        """The member a bearer token belongs to, if the token is valid now."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(members).where(members.c.token_sha256 == secret_digest(token))
            ).first()
        if row is None or row.revoked_at is not None:  # (revoked by the operator in SQL)
            return None
        if row.expires_at is not None and row.expires_at <= time.time():
            return None
        return Member(row.member_id, row.org, row.anonymous)

    def collections_of(self, member: Member) -> list[Collection]:
        query = (
            select(collections, rights.c.can_read, rights.c.can_write)
            .join(rights, rights.c.collection_id == collections.c.collection_id)
            .where(rights.c.member_id == member.member_id)
            .where(or_(rights.c.can_read, rights.c.can_write))
            .order_by(collections.c.name)
        )
        with self.engine.connect() as conn:
            return [
                Collection(r.collection_id, r.name, r.description, r.can_read, r.can_write)
                for r in conn.execute(query)
            ]

    def collection(self, member: Member, collection_id: str) -> Collection | None:
        """The collection, if this member has any right on it (else it does not exist for it)."""
        found = [c for c in self.collections_of(member) if c.collection_id == collection_id]
        return found[0] if found else None

    def add_objects(
        self, member: Member, collection_id: str, stored: Sequence[StoredObject]
    ) -> dict:
        """Add every object in one transaction (a version already there is a success, not a
        copy); returns the TAXII status resource."""
        status_id = str(uuid.uuid4())
        added = now_us()
        successes, failures = [], []
        with self.engine.begin() as conn:
            existing = {
                (r.object_id, r.version)
                for r in conn.execute(
                    select(objects.c.object_id, objects.c.version).where(
                        objects.c.collection_id == collection_id,
                        objects.c.object_id.in_({o.object_id for o in stored}),
                    )
                )
            }
            rows = []
            for obj in stored:
                key = (obj.object_id, obj.version)
                if key in existing:
                    successes.append(
                        {"id": obj.object_id, "version": obj.version, "message": "already there"}
                    )
                    continue
                existing.add(key)
                successes.append({"id": obj.object_id, "version": obj.version})
                rows.append(
                    {
                        "collection_id": collection_id,
                        "object_id": obj.object_id,
                        "type": obj.type,
                        "version": obj.version,
                        "spec_version": obj.spec_version,
                        "added_us": added,
                        "publisher": member.member_id,
                        "publisher_org": member.org,
                        "tlp": obj.tlp,
                        "body": obj.body,
                    }
                )
            if rows:
                conn.execute(objects.insert(), rows)
            conn.execute(
                statuses.insert().values(
                    status_id=status_id,
                    member_id=member.member_id,
                    request_us=added,
                    total=len(stored),
                    successes=successes,
                    failures=failures,
                )
            )
            self._audit(
                conn,
                member,
                "publish",
                collection_id,
                {"status_id": status_id, "objects": len(stored), "new": len(rows)},
            )
        return self.status(member, status_id) or {}

    def status(self, member: Member, status_id: str) -> dict | None:
        """A status resource, to the member that caused it only."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(statuses).where(
                    statuses.c.status_id == status_id, statuses.c.member_id == member.member_id
                )
            ).first()
        if row is None:
            return None
        return {
            "id": row.status_id,
            "status": "complete",
            "request_timestamp": taxii_time(row.request_us),
            "total_count": row.total,
            "success_count": len(row.successes),
            "successes": row.successes,
            "failure_count": len(row.failures),
            "failures": row.failures,
            "pending_count": 0,
        }

    def page(self, member: Member, collection_id: str, query: Query) -> Page:
        """One page of the object versions this member may see, oldest added first."""
        where = [objects.c.collection_id == collection_id, visible(member)]
        if query.added_after_us is not None:
            where.append(objects.c.added_us > query.added_after_us)
        if query.after is not None:
            added, seq = query.after
            where.append(
                or_(
                    objects.c.added_us > added,
                    and_(objects.c.added_us == added, objects.c.seq > seq),
                )
            )
        for column, values in (
            (objects.c.object_id, query.ids),
            (objects.c.type, query.types),
            (objects.c.spec_version, query.spec_versions),
        ):
            if values:
                where.append(column.in_(values))
        if "all" not in query.versions:
            where.append(_versions(member, collection_id, query.versions))
        rows = self._select(
            select(objects.c.added_us, objects.c.seq, *_OBJECT_COLUMNS)
            .where(*where)
            .order_by(objects.c.added_us, objects.c.seq)
            .limit(query.limit + 1)
        )
        page = [(r.added_us, r.seq, _stored(r)) for r in rows[: query.limit]]
        return Page(page, more=len(rows) > query.limit)

    def audit_read(self, member: Member, collection_id: str, what: str, served: int) -> None:
        with self.engine.begin() as conn:
            self._audit(conn, member, "read", collection_id, {"what": what, "objects": served})

    def audit_refusal(self, member: Member | None, collection_id: str | None, reason: str) -> None:
        with self.engine.begin() as conn:
            self._audit(conn, member, "refuse", collection_id, {"reason": reason})

    def audit_log(self, limit: int = 1000) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(audit).order_by(audit.c.seq.desc()).limit(limit))
            return [dict(r._mapping) for r in rows]

    def _select(self, query) -> list:
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    @staticmethod
    def _audit(conn, member: Member | None, action: str, collection_id, detail: dict) -> None:
        conn.execute(
            audit.insert().values(
                ts=time.time(),
                member_id=member.member_id if member else None,
                action=action,
                collection_id=collection_id,
                detail=detail,
            )
        )


_OBJECT_COLUMNS = (
    objects.c.object_id,
    objects.c.type,
    objects.c.version,
    objects.c.spec_version,
    objects.c.tlp,
    objects.c.body,
)


def _stored(row) -> StoredObject:
    return StoredObject(row.object_id, row.type, row.version, row.spec_version, row.tlp, row.body)


def visible(member: Member, table=objects):
    """TLP 2.0 as SQL: RED only to its publisher, AMBER+STRICT only within its org."""
    level = func.coalesce(table.c.tlp, "")
    return and_(
        or_(level != "red", table.c.publisher == member.member_id),
        or_(level != "amber+strict", table.c.publisher_org == member.org),
    )


def _versions(member: Member, collection_id: str, wanted: Sequence[str]):
    """match[version]: "last" / "first" (of the versions this member can see) or exact ones."""
    other = objects.alias("other")
    same_object = and_(
        other.c.collection_id == collection_id,
        other.c.object_id == objects.c.object_id,
        visible(member, other),
    )
    ends = {"last": func.max, "first": func.min}
    conditions = [
        objects.c.version
        == select(ends[value](other.c.version)).where(same_object).scalar_subquery()
        if value in ends
        else objects.c.version == value
        for value in wanted
    ]
    return or_(*conditions)
