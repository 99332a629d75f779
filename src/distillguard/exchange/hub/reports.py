"""Counting reports (the rules are corroboration.py's): the index tables that hold what
counting needs, kept up to date by every envelope inside its own transaction, and the
hub's sightings written from them when an indicator's count changes.

Queries by value or by seq return only what these tables hold; a version already in
hand (posted now, or loaded once) is never loaded again. A query on hub_values by value
filters the collection in Python, not in SQL: given `collection_id = ?`, SQLite (which
has no statistics) walks the whole collection instead of looking the values up.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
from sqlalchemy import Connection, bindparam, func, or_, select

from distillguard.exchange.hub import corroboration
from distillguard.exchange.hub.corroboration import Report, credit
from distillguard.exchange.hub.records import Member, StoredObject
from distillguard.exchange.hub.schema import corroborations, objects, reports, values
from distillguard.exchange.stixfields import taxii_time
from distillguard.store.sql import select_in


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


class Reports:
    """One envelope's corroboration, inside its transaction: `index` the indicators and
    sightings it brings (hub_reports, hub_values, and which version of each object is
    its report and which its target), then `write` the hub's sightings of the indicators
    whose reports changed."""

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
            for row in select_in(self.conn, query, objects.c.object_id, ids)
        }
        flagged = _VERSIONS.where(in_collection, or_(reports.c.is_report, reports.c.is_target))
        old: dict[str, list[_Version]] = defaultdict(list)
        for row in select_in(self.conn, flagged, objects.c.object_id, ids & seen):
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
            for row in select_in(self.conn, query, objects.c.object_id, unknown):
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
        counted: dict[str, dict[str, Report]] = {i: {} for i in targets}
        default = corroboration.DEFAULT_CONFIDENCE
        for indicator, mine in own.items():  # an indicator is its publisher's report
            if indicator in targets and not mine.revoked:
                credit(
                    counted[indicator],
                    mine.publisher_org,
                    (_or(mine.confidence, default), mine.first_us, mine.added_us),
                )
        # Indicators sharing a value: per value, its reporting organisations once, then
        # every target holding it takes them.
        wanted = {x for t in targets.values() for x in t.values or ()}
        holders = self._holders_of(wanted)
        by_value: dict[str, dict[str, Report]] = {}
        for value in wanted:
            orgs: dict[str, Report] = {}
            for seq in holders[value]:
                v = self.by_seq[seq]
                if v.is_report and not v.revoked and v.collection_id == self.collection_id:
                    report = (_or(v.confidence, default), v.first_us, v.added_us)
                    credit(orgs, v.publisher_org, report)
            by_value[value] = orgs
        for indicator, target in targets.items():
            for value in target.values or ():
                for org, report in by_value[value].items():
                    credit(counted[indicator], org, report)
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
        for row in select_in(self.conn, sighted, reports.c.sighting_of, targets):
            confidence = _or(row.confidence, -1)
            if row.unrated:  # a sighting without a confidence takes the indicator's
                confidence = max(confidence, _or(targets[row.sighting_of].confidence, default))
            report = (confidence, row.first_us, row.added_us)
            credit(counted[row.sighting_of], row.publisher_org, report)
        return self._write(identity, targets, counted)

    def _write(
        self,
        identity: str,
        targets: dict[str, _Version],
        counted: dict[str, dict[str, Report]],
    ) -> int:
        query = select(corroborations).where(corroborations.c.collection_id == self.collection_id)
        before = {  # (an object new to the collection has no corroboration yet)
            row.indicator_id: row
            for row in select_in(
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
                state = corroboration.counted(orgs)
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
        for row in select_in(self.conn, select(values), values.c.seq, missing):
            found[row.seq].append(row.value)
        for seq, version in missing.items():
            version.values = tuple(found[seq])

    def _holders_of(self, wanted: set[str]) -> dict[str, list[int]]:
        """Who holds each value (seqs, in any collection), every version loaded."""
        missing = wanted - self.holders.keys()
        if missing:
            for value in missing:
                self.holders[value] = []
            for row in select_in(self.conn, select(values), values.c.value, missing):
                self.holders[row.value].append(row.seq)
            unknown = {seq for value in missing for seq in self.holders[value]} - set(self.by_seq)
            for row in select_in(self.conn, _VERSIONS, reports.c.seq, unknown):
                self._keep(_version_of(row))
        return self.holders


def _version_of(row) -> _Version:
    return _Version(**row._mapping)  # (a _VERSIONS row: the fields, values aside)


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


def _some(version: _Version | None) -> list[_Version]:
    return [] if version is None else [version]


def _version(version: _Version) -> str:
    return version.version


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def _time_or_none(us: int | None) -> str | None:
    return None if us is None else taxii_time(us)
