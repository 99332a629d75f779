"""The hub's object store: collections, members and their rights, object versions,
statuses and audit. Counting reports is reports.py's, inside the same transactions.

Every read goes through `visible()`: the TLP rule (exchange/tlp.py) is a SQL condition,
so an object a member may not see is never loaded for it, let alone filtered late.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Sequence

import msgspec
from sqlalchemy import Engine, and_, bindparam, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from distillguard.errors import DistillguardError
from distillguard.exchange import tlp
from distillguard.exchange.hub.records import Collection, Held, Member, Page, Query, StoredObject
from distillguard.exchange.hub.reports import Reports
from distillguard.exchange.hub.schema import (
    audit,
    collections,
    members,
    objects,
    rights,
    statuses,
)
from distillguard.exchange.stixfields import now_us, taxii_time
from distillguard.store.accounts import check_id, secret_digest
from distillguard.store.sql import select_in

TOKEN_PREFIX = "dgx"
NAMESPACE = uuid.UUID("5b0e1c52-52a8-4a4b-8d43-1c2f0f6c9f5e")  # the hub's uuid5 namespace
TITLE = "distillguard exchange hub"


class HubError(DistillguardError):
    """A hub command was given a name or right that cannot be used."""


def hub_identity(title: str = TITLE) -> str:
    """The hub's STIX identity: the author of its sightings and of anonymous members'
    objects."""
    return f"identity--{uuid.uuid5(NAMESPACE, f'hub:{title}')}"


class HubStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def remark_tlp(self, chunk: int = 1000) -> int:
        """Re-read the TLP level of every stored object under today's rules; the number
        changed. Objects stored before TLP 1.0 ids, any-case ids and granular markings
        were recognised were filed as unmarked and served to everyone; a marking that
        cannot be read now files its object as RED (fail closed). `hub serve` runs it."""
        changed, after = 0, 0
        while True:
            with self.engine.begin() as conn:
                rows = conn.execute(
                    select(objects.c.seq, objects.c.tlp, objects.c.body)
                    .where(objects.c.seq > after)
                    .order_by(objects.c.seq)
                    .limit(chunk)
                ).all()
                if not rows:
                    return changed
                after = rows[-1].seq
                fixes = [
                    {"row": row.seq, "level": level}
                    for row in rows
                    if (level := _stored_level(row.body)) != row.tlp
                ]
                if fixes:
                    conn.execute(
                        update(objects)
                        .where(objects.c.seq == bindparam("row"))
                        .values(tlp=bindparam("level")),
                        fixes,
                    )
                changed += len(fixes)

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
            rows = conn.execute(select(collections.c.name, collections.c.collection_id))
            known = {name: collection_id for name, collection_id in rows}
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

    def revoke_member(self, name: str) -> None:
        """Refuse the member's token from now on (its objects stay: others rely on them)."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(members)
                .where(members.c.member_id == name, members.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
            known = conn.execute(select(members.c.member_id).where(members.c.member_id == name))
            if known.first() is None:
                raise HubError(f"no member named {name!r}")
            if done.rowcount:
                self._audit(conn, None, "revoke", None, {"member": name})

    # -- requests ----------------------------------------------------------------------

    def member_for(self, token: str) -> Member | None:
        """The member a bearer token belongs to, if the token is valid now."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(members).where(members.c.token_sha256 == secret_digest(token))
            ).first()
        if row is None or row.revoked_at is not None:  # `hub member revoke`
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
        self,
        member: Member,
        collection_id: str,
        stored: Sequence[StoredObject],
        *,
        identity: str | None = None,
    ) -> dict:
        """Add every object in one transaction (a version already there is a success, not a
        copy), with the hub's corroboration sightings (by `identity`) that they change;
        returns the TAXII status resource."""
        status_id = str(uuid.uuid4())
        successes, failures = [], []
        new: list[StoredObject] = []  # the versions not there yet
        with self.engine.begin() as conn:
            # One envelope at a time per collection (a row lock on PostgreSQL, the write
            # lock on SQLite): corroboration counts what the envelopes before wrote, and
            # the dates added increase in the order envelopes commit.
            conn.execute(
                update(collections)
                .where(collections.c.collection_id == collection_id)
                .values(name=collections.c.name)
            )
            added = now_us()
            held = self._held(conn, member, collection_id, {o.object_id for o in stored})
            rows = []
            for obj in stored:
                key = (obj.object_id, obj.version)
                refused = {"message": obj.refusal} if obj.refusal else None
                refused = refused or held.refusal(member, obj.object_id, key)
                if refused is not None:
                    failures.append({"id": obj.object_id, "version": obj.version, **refused})
                    continue
                if key in held.readable:
                    successes.append(
                        {"id": obj.object_id, "version": obj.version, "message": "already there"}
                    )
                    continue
                held.add(member, key)
                new.append(obj)
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
            corroborating = Reports(conn, collection_id, added)
            corroborating.index(member, new, held.seen)
            sightings = corroborating.write(identity or hub_identity())
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
                {
                    "status_id": status_id,
                    "objects": len(stored),
                    "new": len(rows),
                    "corroborations": sightings,
                },
            )
        return self.status(member, status_id) or {}

    @staticmethod
    def _held(conn, member: Member, collection_id: str, ids: set[str]) -> Held:
        held = Held()
        query = select(
            objects.c.object_id,
            objects.c.version,
            objects.c.publisher,
            objects.c.publisher_org,
            objects.c.tlp,
        ).where(objects.c.collection_id == collection_id)
        for r in select_in(conn, query, objects.c.object_id, ids):
            held.owner[r.object_id] = r.publisher_org
            held.versions.add((r.object_id, r.version))
            same_member, same_org = r.publisher == member.member_id, r.publisher_org == member.org
            if tlp.may_read(r.tlp, same_member=same_member, same_org=same_org):
                held.readable.add((r.object_id, r.version))
                held.readable_ids.add(r.object_id)
        held.seen = set(held.owner)
        return held

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
        for column, wanted in (
            (objects.c.object_id, query.ids),
            (objects.c.type, query.types),
            (objects.c.spec_version, query.spec_versions),
        ):
            if wanted:
                where.append(column.in_(wanted))
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


def _stored_level(body: str) -> str | None:
    try:
        obj = msgspec.json.decode(body)
        return tlp.object_level(obj) if isinstance(obj, dict) else "red"
    except (msgspec.DecodeError, tlp.UnknownMarking):
        return "red"
