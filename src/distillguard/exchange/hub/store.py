"""The hub's records: collections, members and their rights, objects, statuses, audit,
and the index that corroboration counts reports with.

Every read goes through `visible()`: the TLP rule (exchange/tlp.py) is a SQL condition,
so an object a member may not see is never loaded for it, let alone filtered late.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec
from sqlalchemy import Connection, Engine, and_, bindparam, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from distillguard.errors import DistillguardError
from distillguard.exchange import tlp
from distillguard.exchange.hub import corroboration
from distillguard.exchange.hub.corroboration import Facts
from distillguard.exchange.hub.schema import (
    audit,
    collections,
    corroborations,
    members,
    objects,
    reports,
    rights,
    statuses,
    values,
)
from distillguard.store.accounts import check_id, secret_digest

TOKEN_PREFIX = "dgx"
NAMESPACE = uuid.UUID("5b0e1c52-52a8-4a4b-8d43-1c2f0f6c9f5e")  # the hub's uuid5 namespace
TITLE = "distillguard exchange hub"


class HubError(DistillguardError):
    """A hub command was given a name or right that cannot be used."""


def hub_identity(title: str = TITLE) -> str:
    """The hub's STIX identity: the author of its sightings and of anonymous members'
    objects."""
    return f"identity--{uuid.uuid5(NAMESPACE, f'hub:{title}')}"


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
    facts: Facts | None = field(default=None, compare=False)  # a posted indicator or sighting
    refusal: str | None = field(default=None, compare=False)  # why it is not stored, if not


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


TAKEN = (
    "this id is taken in this collection by an object this member may not version; "
    "STIX ids are random (UUID version 4): give the object a new one"
)


@dataclass
class _Held:
    """What a collection holds of the objects an envelope names, as its poster may know
    it: a status never tells a member more than it may read (an object it may not read
    is only ever "taken", never "already there" nor another organisation's)."""

    owner: dict[str, str] = field(default_factory=dict)  # object id -> publisher org
    versions: set[tuple[str, str]] = field(default_factory=set)  # (id, version) held
    readable: set[tuple[str, str]] = field(default_factory=set)  # those the poster reads
    readable_ids: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)  # ids the collection held before

    def refusal(self, member: Member, object_id: str, key: tuple[str, str]) -> dict | None:
        if key in self.readable:
            return None  # "already there"
        if key in self.versions:
            return {"message": TAKEN}
        if self.owner.get(object_id, member.org) == member.org:
            return None
        if object_id in self.readable_ids:
            # Another organisation's object: a new version (say, `revoked`) from anyone
            # else would rewrite what its publisher said.
            return {"message": "only its publisher's organisation may version it"}
        return {"message": TAKEN}

    def add(self, member: Member, key: tuple[str, str]) -> None:
        self.owner.setdefault(key[0], member.org)
        self.versions.add(key)
        self.readable.add(key)
        self.readable_ids.add(key[0])


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
            corroborating = _Corroboration(conn, collection_id, added)
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
    def _held(conn, member: Member, collection_id: str, ids: set[str]) -> _Held:
        held = _Held()
        query = select(
            objects.c.object_id,
            objects.c.version,
            objects.c.publisher,
            objects.c.publisher_org,
            objects.c.tlp,
        ).where(objects.c.collection_id == collection_id)
        for r in _select_in(conn, query, objects.c.object_id, ids):
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


# -- corroboration ------------------------------------------------------------------------

_CHUNK = 500  # keys per IN (...) list


@dataclass(eq=False)
class _Version:
    """A version of an indicator or sighting as counting reports sees it: its hub_objects
    row, its hub_reports row, and its values (None until loaded)."""

    seq: int
    object_id: str
    collection_id: str
    version: str
    type: str
    publisher: str
    publisher_org: str
    tlp: str | None
    added_us: int
    confidence: int | None
    revoked: bool
    sighting_of: str | None
    first_us: int
    is_report: bool = False
    is_target: bool = False
    values: tuple[str, ...] | None = None

    @property
    def readable(self) -> bool:
        """Whether every member of the collection may read this version."""
        return self.tlp is None or self.tlp in corroboration.COUNTED_TLP


_VERSION_COLUMNS = (
    objects.c.seq,
    objects.c.object_id,
    objects.c.collection_id,
    objects.c.version,
    objects.c.type,
    objects.c.publisher,
    objects.c.publisher_org,
    objects.c.tlp,
    objects.c.added_us,
    reports.c.confidence,
    reports.c.revoked,
    reports.c.sighting_of,
    reports.c.first_us,
    reports.c.is_report,
    reports.c.is_target,
)
_VERSIONS = select(*_VERSION_COLUMNS).select_from(
    reports.join(objects, objects.c.seq == reports.c.seq)
)


class _Corroboration:
    """One envelope's corroboration, inside its transaction: `index` the indicators and
    sightings it brings (hub_reports, hub_values, and which version of each object is
    its report and which its target), then `write` the hub's sightings of the indicators
    whose reports changed.

    Queries by value or by seq return only what these tables hold; a version already
    in hand (posted now, or loaded once) is never loaded again. A query on hub_values by
    value filters the collection in Python, not in SQL: given `collection_id = ?`,
    SQLite (which has no statistics) walks the whole collection instead of looking the
    values up."""

    def __init__(self, conn: Connection, collection_id: str, added: int) -> None:
        self.conn = conn
        self.collection_id = collection_id
        self.added = added
        self.by_seq: dict[int, _Version] = {}
        self.flagged: dict[str, list[_Version]] = {}  # object id: its report/target versions
        self.holders: dict[str, list[int]] = {}  # value: the seqs of versions that hold it
        self.recount: set[str] = set()  # indicators whose reports may have changed
        self.fresh: set[str] = set()  # posted objects the collection did not hold before

    # -- index ---------------------------------------------------------------------------

    def index(
        self,
        member: Member,
        new: Sequence[StoredObject],
        seen: set[str],
    ) -> None:
        """Index the versions just added to hub_objects (`new`) of objects (`seen`: those
        the collection held before)."""
        reporting = [obj for obj in new if obj.facts is not None]
        if not reporting:
            return
        ids = {obj.object_id for obj in reporting}
        self.fresh = ids - seen
        in_collection = objects.c.collection_id == self.collection_id
        # Their seqs (portable, where INSERT … RETURNING is not: SQLite before 3.35).
        query = select(objects.c.seq, objects.c.object_id, objects.c.version).where(in_collection)
        seqs = {
            (row.object_id, row.version): row.seq
            for row in _select_in(self.conn, query, objects.c.object_id, ids)
        }
        flagged = _VERSIONS.where(in_collection, or_(reports.c.is_report, reports.c.is_target))
        old: dict[str, list[_Version]] = defaultdict(list)
        for row in _select_in(self.conn, flagged, objects.c.object_id, ids & seen):
            old[row.object_id].append(self._keep(_version_of(row)))
        self._load_values([v for versions in old.values() for v in versions])

        posted: dict[str, list[_Version]] = defaultdict(list)
        for obj in reporting:
            facts = obj.facts
            assert facts is not None
            seq = seqs[obj.object_id, obj.version]
            posted[obj.object_id].append(
                self._keep(
                    _Version(
                        seq,
                        obj.object_id,
                        self.collection_id,
                        obj.version,
                        obj.type,
                        member.member_id,
                        member.org,
                        obj.tlp,
                        self.added,
                        facts.confidence,
                        facts.revoked,
                        facts.sighting_of,
                        self.added,
                        values=facts.values,
                    )
                )
            )
        inserted: list[_Version] = []
        flags: list[dict] = []  # of rows already there
        changed_values: set[str] = set()
        for object_id, versions in posted.items():
            previous = old.get(object_id, [])
            if not previous and len(versions) == 1:  # the common case: a new object
                (version,) = versions
                version.is_target, version.is_report = True, version.readable
                self.flagged[object_id] = [version]
                inserted.append(version)
                changed_values.update(version.values or ())
                if version.sighting_of is not None:
                    self.recount.add(version.sighting_of)
                if version.type == "indicator":
                    self.recount.add(object_id)
                continue
            was_target = next((v for v in previous if v.is_target), None)
            was_report = next((v for v in previous if v.is_report), None)
            target = max([*_some(was_target), *versions], key=_version)
            report = max(
                [*_some(was_report), *(v for v in versions if v.readable)],
                key=_version,
                default=None,
            )
            self.flagged[object_id] = [target, *_some(report if report is not target else None)]
            if target is was_target and report is was_report:
                continue  # only older versions arrived
            first = min((v.first_us for v in previous), default=self.added)
            for version in {v.seq: v for v in (*previous, target, *_some(report))}.values():
                is_target, is_report = version is target, version is report
                if version in previous:
                    if (is_target, is_report) != (version.is_target, version.is_report):
                        flags.append(
                            {"b_seq": version.seq, "b_report": is_report, "b_target": is_target}
                        )
                else:
                    version.first_us = first
                    inserted.append(version)
                version.is_target, version.is_report = is_target, is_report
                changed_values.update(version.values or ())
                if version.sighting_of is not None:
                    self.recount.add(version.sighting_of)
            if target.type == "indicator":
                self.recount.add(object_id)
        if inserted:
            rows = [_report_row(self.collection_id, v) for v in inserted]
            self.conn.execute(reports.insert(), rows)
            value_rows = [{"value": x, "seq": v.seq} for v in inserted for x in v.values or ()]
            if value_rows:
                self.conn.execute(values.insert(), value_rows)
        if flags:
            self.conn.execute(
                reports.update()
                .where(reports.c.seq == bindparam("b_seq"))
                .values(is_report=bindparam("b_report"), is_target=bindparam("b_target")),
                flags,
            )
        # Indicators that hold a value that changed hands are recounted too.
        holders = self._holders_of(changed_values)
        for value in changed_values:
            for seq in holders[value]:
                version = self.by_seq[seq]
                if version.is_target and version.collection_id == self.collection_id:
                    self.recount.add(version.object_id)

    # -- count and write -----------------------------------------------------------------

    def write(self, identity: str) -> int:
        """Count the reports of the indicators to recount and write a version of the hub's
        sighting of each whose count changed (a first one once two organisations report
        it); returns how many versions were written."""
        unknown = self.recount - self.flagged.keys()
        if unknown:
            query = _VERSIONS.where(
                objects.c.collection_id == self.collection_id,
                or_(reports.c.is_report, reports.c.is_target),
            )
            found = defaultdict(list)
            for row in _select_in(self.conn, query, objects.c.object_id, unknown):
                found[row.object_id].append(self._keep(_version_of(row)))
            self.flagged.update(found)
        targets: dict[str, _Version] = {}
        own: dict[str, _Version] = {}
        for object_id in self.recount:
            for version in self.flagged.get(object_id, ()):
                if version.type != "indicator":
                    continue
                if version.is_target:
                    targets[object_id] = version
                if version.is_report:
                    own[object_id] = version
        if not targets:
            return 0
        self._load_values(list(targets.values()))
        counted: dict[str, dict[str, tuple[int, int, int]]] = {i: {} for i in targets}
        default = corroboration.DEFAULT_CONFIDENCE
        for indicator, mine in own.items():  # an indicator is its publisher's report
            if indicator in targets and not mine.revoked:
                _credit(
                    counted[indicator],
                    mine.publisher_org,
                    (_or(mine.confidence, default), mine.first_us, mine.added_us),
                )
        # Indicators sharing a value: per value, its reporting organisations once, then
        # every target holding it takes them.
        wanted = {x for t in targets.values() for x in t.values or ()}
        holders = self._holders_of(wanted)
        by_value: dict[str, dict[str, tuple[int, int, int]]] = {}
        for value in wanted:
            orgs: dict[str, tuple[int, int, int]] = {}
            for seq in holders[value]:
                v = self.by_seq[seq]
                if v.is_report and not v.revoked and v.collection_id == self.collection_id:
                    report = (_or(v.confidence, default), v.first_us, v.added_us)
                    _credit(orgs, v.publisher_org, report)
            by_value[value] = orgs
        for indicator, target in targets.items():
            for value in target.values or ():
                for org, report in by_value[value].items():
                    _credit(counted[indicator], org, report)
        sighted = (
            select(
                reports.c.sighting_of,
                objects.c.publisher_org,
                func.max(reports.c.confidence).label("confidence"),
                (func.count() - func.count(reports.c.confidence)).label("unrated"),
                func.min(reports.c.first_us).label("first_us"),
                func.max(objects.c.added_us).label("added_us"),
            )
            .select_from(reports.join(objects, objects.c.seq == reports.c.seq))
            .where(
                reports.c.collection_id == self.collection_id,
                reports.c.is_report,
                ~reports.c.revoked,
            )
            .group_by(reports.c.sighting_of, objects.c.publisher_org)
        )
        for row in _select_in(self.conn, sighted, reports.c.sighting_of, targets):
            confidence = _or(row.confidence, -1)
            if row.unrated:  # a sighting without a confidence takes the indicator's
                confidence = max(confidence, _or(targets[row.sighting_of].confidence, default))
            report = (confidence, row.first_us, row.added_us)
            _credit(counted[row.sighting_of], row.publisher_org, report)
        return self._write(identity, targets, counted)

    def _write(
        self,
        identity: str,
        targets: dict[str, _Version],
        counted: dict[str, dict[str, tuple[int, int, int]]],
    ) -> int:
        query = select(corroborations).where(corroborations.c.collection_id == self.collection_id)
        before = {  # (an object new to the collection has no corroboration yet)
            row.indicator_id: row
            for row in _select_in(
                self.conn, query, corroborations.c.indicator_id, targets.keys() - self.fresh
            )
        }
        added = self.added
        new_objects, inserts, updates = [], [], []
        for indicator, target in targets.items():
            previous = before.get(indicator)
            orgs = counted[indicator]
            if previous is None and (target.revoked or len(orgs) < 2):
                continue
            if previous is not None and previous.state["revoked"]:
                continue  # a revoked sighting has no later version
            if target.revoked:
                state = {**previous.state, "revoked": True}  # what it said, now withdrawn
            else:
                state = {
                    "count": len(orgs),
                    "confidence": corroboration.combined_confidence(c for c, _, _ in orgs.values()),
                    "first_us": min((f for _, f, _ in orgs.values()), default=None),
                    "last_us": max((last for _, _, last in orgs.values()), default=None),
                    "revoked": False,
                }
            state.update(
                tlp=target.tlp, publisher=target.publisher, publisher_org=target.publisher_org
            )
            if previous is not None and previous.state == state:
                continue
            created = previous.created_us if previous else added
            modified = max(added, previous.version_us + 1) if previous else added
            body = corroboration.sighting(
                indicator,
                identity=identity,
                created=taxii_time(created),
                modified=taxii_time(modified),
                count=state["count"],
                confidence=state["confidence"],
                first_seen=_time_or_none(state["first_us"]),
                last_seen=_time_or_none(state["last_us"]),
                tlp_level=target.tlp,
                revoked=state["revoked"],
            )
            new_objects.append(
                {
                    "collection_id": self.collection_id,
                    "object_id": body["id"],
                    "type": "sighting",
                    "version": taxii_time(modified),
                    "spec_version": "2.1",
                    "added_us": added,
                    # The indicator's readers exactly: visible() applies its TLP to these.
                    "publisher": target.publisher,
                    "publisher_org": target.publisher_org,
                    "tlp": target.tlp,
                    "body": msgspec.json.encode(body).decode(),
                }
            )
            if previous is None:
                inserts.append(
                    {
                        "collection_id": self.collection_id,
                        "indicator_id": indicator,
                        "created_us": created,
                        "version_us": modified,
                        "state": state,
                    }
                )
            else:
                updates.append(
                    {
                        "b_collection": self.collection_id,
                        "b_indicator": indicator,
                        "b_version": modified,
                        "b_state": state,
                    }
                )
        if new_objects:
            self.conn.execute(objects.insert(), new_objects)
        if inserts:
            self.conn.execute(corroborations.insert(), inserts)
        if updates:
            self.conn.execute(
                corroborations.update()
                .where(
                    corroborations.c.collection_id == bindparam("b_collection"),
                    corroborations.c.indicator_id == bindparam("b_indicator"),
                )
                .values(version_us=bindparam("b_version"), state=bindparam("b_state")),
                updates,
            )
        return len(new_objects)

    # -- loading -------------------------------------------------------------------------

    def _keep(self, version: _Version) -> _Version:
        """The one _Version of a seq (the first seen wins: it may carry changed flags)."""
        return self.by_seq.setdefault(version.seq, version)

    def _load_values(self, versions: Sequence[_Version]) -> None:
        missing = {v.seq: v for v in versions if v.values is None}
        if not missing:
            return
        found = defaultdict(list)
        for row in _select_in(self.conn, select(values), values.c.seq, missing):
            found[row.seq].append(row.value)
        for seq, version in missing.items():
            version.values = tuple(found[seq])

    def _holders_of(self, wanted: set[str]) -> dict[str, list[int]]:
        """Who holds each value (seqs, in any collection), every version loaded."""
        missing = wanted - self.holders.keys()
        if missing:
            for value in missing:
                self.holders[value] = []
            for row in _select_in(self.conn, select(values), values.c.value, missing):
                self.holders[row.value].append(row.seq)
            unknown = {seq for value in missing for seq in self.holders[value]} - set(self.by_seq)
            for row in _select_in(self.conn, _VERSIONS, reports.c.seq, unknown):
                self._keep(_version_of(row))
        return self.holders


def _credit(orgs: dict[str, tuple[int, int, int]], org: str, report: tuple[int, int, int]):
    """Add a report (confidence, first added, last added) to its organisation's."""
    seen = orgs.get(org)
    if seen is None:
        orgs[org] = report
    else:
        orgs[org] = (max(seen[0], report[0]), min(seen[1], report[1]), max(seen[2], report[2]))


def _version_of(row) -> _Version:
    return _Version(
        row.seq,
        row.object_id,
        row.collection_id,
        row.version,
        row.type,
        row.publisher,
        row.publisher_org,
        row.tlp,
        row.added_us,
        row.confidence,
        row.revoked,
        row.sighting_of,
        row.first_us,
        is_report=row.is_report,
        is_target=row.is_target,
    )


def _report_row(collection_id: str, v: _Version) -> dict:
    return {
        "seq": v.seq,
        "collection_id": collection_id,
        "is_report": v.is_report,
        "is_target": v.is_target,
        "confidence": v.confidence,
        "revoked": v.revoked,
        "sighting_of": v.sighting_of,
        "first_us": v.first_us,
    }


def _select_in(conn: Connection, query, column, keys: Iterable) -> list:
    """`query` with `column IN keys`, in chunks."""
    rows: list = []
    for chunk in _chunks(keys):
        rows += conn.execute(query.where(column.in_(chunk))).all()
    return rows


def _chunks(keys: Iterable) -> Iterator[list]:
    keys = list(keys)
    for start in range(0, len(keys), _CHUNK):
        yield keys[start : start + _CHUNK]


def _some(version: _Version | None) -> list[_Version]:
    return [] if version is None else [version]


def _version(version: _Version) -> str:
    return version.version


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def _time_or_none(us: int | None) -> str | None:
    return None if us is None else taxii_time(us)


def _stored_level(body: str) -> str | None:
    try:
        obj = msgspec.json.decode(body)
        return tlp.object_level(obj) if isinstance(obj, dict) else "red"
    except (msgspec.DecodeError, tlp.UnknownMarking):
        return "red"
