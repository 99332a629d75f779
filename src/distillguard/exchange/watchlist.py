"""The watchlist: other members' indicators, in the gateway's store, matched against our accounts.

`exchange pull` feeds it STIX objects; an account whose identifiers (kept only as
consortium-keyed hashes, `identify`) match a shared account indicator has its tier
raised by the indicator's *current* confidence: the publisher's confidence, or the
hub's corroboration if several members reported it, decayed with the time since the
last report (MISP's polynomial decay, docs/exchange.md):

    confidence(age) = base × max(0, 1 − (age / lifetime) ^ (1 / decay_speed))

Matching is one SQL join on indexed hashes, so a pull checks every account the
gateway knows, and an account identified after the pull is checked at once: either
way the account's first request already meets the raised tier.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import Engine, delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from distillguard.config import ExchangeSettings
from distillguard.exchange import indicators
from distillguard.exchange.indicators import Indicator
from distillguard.exchange.privacy import ExchangeError, KeyRing, decode_signature
from distillguard.exchange.stixfields import parse_time, stix_time
from distillguard.store import AccountStore, UnknownIdError
from distillguard.store.schema import (
    account_identifiers,
    accounts,
    exchange_cursors,
    exchange_published,
    tier_changes,
    watchlist,
    watchlist_corroboration,
)
from distillguard.store.sql import delete_in, select_in
from distillguard.tracing.shared import SharedTemplates

DAY = 86_400.0
CORROBORATING = 2  # organisations whose reports may throttle or block an account
WATCHLIST_ACTOR = "exchange watchlist"  # who the audit trail names for the raises it makes


@dataclass(frozen=True)
class Match:
    """One of our accounts, matched by a shared indicator, at the indicator's confidence now."""

    account_id: str
    indicator_id: str
    kind: str  # which of the account's identifiers matched: email, phone, payment
    confidence: float
    members: int  # how many members reported the indicator (1: its publisher alone)

    def reason(self) -> str:
        by = f"{self.members} organisations" if self.members > 1 else "one organisation"
        return (
            f"exchange: {self.kind} matches shared indicator {self.indicator_id} "
            f"(confidence {self.confidence:.2f}, reported by {by})"
        )


class Hub(Protocol):
    """What a pull needs of the hub (`client.HubClient`)."""

    url: str
    last_added: str | None

    def pages(self, added_after: str | None) -> Iterator[list[dict]]: ...


@dataclass
class Ingested:
    """What one batch of pulled objects did to the watchlist."""

    indicators: int = 0  # stored (new, or a newer version)
    revoked: int = 0
    corroborations: int = 0
    ignored: int = 0  # not ours to act on: campaigns, relationships, older versions, …
    problems: list[str] = field(default_factory=list)

    def add(self, other: Ingested) -> None:
        self.indicators += other.indicators
        self.revoked += other.revoked
        self.corroborations += other.corroborations
        self.ignored += other.ignored
        self.problems.extend(other.problems)


@dataclass
class Pulled:
    objects: int = 0
    ingested: Ingested = field(default_factory=Ingested)
    matches: list[Match] = field(default_factory=list)
    raised: dict[str, str] = field(default_factory=dict)  # account -> tier


def decayed(base: float, age_seconds: float, settings: ExchangeSettings) -> float:
    """The confidence `base` left after `age_seconds` without a new report."""
    age = max(age_seconds, 0.0) / (settings.lifetime_days * DAY)
    return base * max(0.0, 1.0 - age ** (1.0 / settings.decay_speed))


class Watchlist:
    def __init__(self, engine: Engine, keyring: KeyRing | None, settings: ExchangeSettings) -> None:
        self.engine = engine
        self.keyring = keyring
        self.settings = settings
        self.accounts = AccountStore(engine)

    # -- our side: accounts and their identifiers -------------------------------------

    def identify(
        self, account_id: str, identifiers: Sequence[tuple[str, str]], apply: bool = True
    ) -> list[Match]:
        """Record an account's identifiers (as their hashes under every consortium key held)
        and match them at once; with `apply`, raise its tier. Raw values are not kept."""
        if self.keyring is None:
            raise ExchangeError("no consortium key ring: set exchange.keyring (exchange keygen)")
        if not identifiers:
            raise ExchangeError("give at least one identifier (email, phone or payment)")
        rows = {  # every value is normalised and checked before anything is written
            digest: kind
            for kind, value in identifiers
            for digest in self.keyring.hashes(kind, value)
        }
        for attempt in range(3):
            try:
                self._record(account_id, rows)
                break
            except IntegrityError:  # the same hash, recorded meanwhile by a concurrent call
                if attempt == 2:
                    raise
        found = self.matches([account_id])
        if apply:
            self.apply(found)
        return found

    def hashes(self, key_id: str, account_ids: Sequence[str] | None = None) -> list[str]:
        """Our accounts' identifier hashes under one consortium key (all accounts, or these)."""
        query = select(account_identifiers.c.hash).where(
            account_identifiers.c.hash.startswith(f"{key_id}:")
        )
        if account_ids is not None:
            query = query.where(account_identifiers.c.account_id.in_(account_ids))
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def _record(self, account_id: str, rows: Mapping[str, str]) -> None:
        with self.engine.begin() as conn:
            known = conn.execute(
                select(accounts.c.account_id).where(accounts.c.account_id == account_id)
            ).first()
            if known is None:
                raise UnknownIdError(f"no account {account_id!r} (issue it a key first)")
            held = set(
                conn.execute(
                    select(account_identifiers.c.hash).where(
                        account_identifiers.c.account_id == account_id
                    )
                ).scalars()
            )
            now = time.time()
            fresh = [
                {"account_id": account_id, "hash": h, "kind": k, "added_at": now}
                for h, k in rows.items()
                if h not in held
            ]
            if fresh:
                conn.execute(insert(account_identifiers), fresh)

    # -- their side: pulled objects ----------------------------------------------------

    def ingest(self, objects: Iterable[dict]) -> Ingested:
        """Store the indicators and corroborations among `objects` (one transaction);
        a newer version replaces an older one, a revoked indicator is dropped. An object
        that cannot be read is reported by id and skipped; the others still count.

        A page at a time: one query finds the versions held, one deletes what is
        replaced, one inserts the rest (a pull is ~10x faster than object by object)."""
        now = time.time()
        reading = indicators.read(objects, now)
        done = Ingested(ignored=reading.ignored, problems=reading.problems)
        with self.engine.begin() as conn:
            fresh = _newer(conn, watchlist.c.indicator_id, watchlist.c.modified, reading.indicators)
            done.ignored += len(reading.indicators) - len(fresh)  # versions we have, or older
            delete_in(conn, watchlist.c.indicator_id, [f.id for f in fresh])
            rows = []
            for found in fresh:
                if found.revoked:  # its version stays, so an older one cannot return
                    done.revoked += 1
                    rows.append(_row(found, "", "revoked", now))
                elif found.kind is None:
                    done.ignored += 1
                elif not found.values:
                    done.problems.append(f"{found.id}: no usable value in its pattern")
                else:
                    done.indicators += 1
                    rows += [_row(found, value, found.kind, now) for value in found.values]
            if rows:
                conn.execute(insert(watchlist), rows)
            table = watchlist_corroboration
            words = reading.corroborations
            fresh_words = _newer(conn, table.c.indicator_id, table.c.modified, words)
            done.ignored += len(words) - len(fresh_words)
            delete_in(conn, table.c.indicator_id, [c.indicator_id for c in fresh_words])
            if fresh_words:
                conn.execute(insert(table), [vars(c) for c in fresh_words])
            done.corroborations += len(fresh_words)
        return done

    def pull(self, hub: Hub) -> Pulled:
        """Everything new in the hub's collection since the last pull, into the watchlist;
        then every account we know is matched against it and raised as its matches earn.
        The cursor moves only when the whole pull is in, so a failed pull is redone."""
        pulled = Pulled()
        cursor = self._cursor(hub.url)
        for page in hub.pages(_overlapping(cursor)):
            pulled.objects += len(page)
            pulled.ingested.add(self.ingest(page))
        if hub.last_added or cursor:  # the time of this pull is kept even if nothing was new
            self._move_cursor(hub.url, hub.last_added or cursor)
        pulled.matches = self.matches()
        pulled.raised = self.apply(pulled.matches)
        return pulled

    def _cursor(self, url: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(exchange_cursors.c.added_after).where(
                    exchange_cursors.c.collection_url == url
                )
            ).scalar()

    def _move_cursor(self, url: str, added_after: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(exchange_cursors).where(exchange_cursors.c.collection_url == url))
            conn.execute(
                insert(exchange_cursors).values(
                    collection_url=url, added_after=added_after, pulled_at=time.time()
                )
            )

    # -- matching ------------------------------------------------------------------------

    def matches(
        self, account_ids: Sequence[str] | None = None, now: float | None = None
    ) -> list[Match]:
        """Every (account, indicator) pair whose hashes meet, at the indicator's current
        confidence; pairs whose confidence has decayed to nothing are left out."""
        now = time.time() if now is None else now
        held, shared, hub = account_identifiers, watchlist, watchlist_corroboration
        query = (
            select(
                held.c.account_id,
                held.c.kind,
                shared.c.indicator_id,
                shared.c.confidence,
                shared.c.reported_at,
                shared.c.valid_until,
                hub.c.members,
                hub.c.confidence.label("corroborated"),
                hub.c.last_seen,
            )
            .join(shared, shared.c.value == held.c.hash)
            .outerjoin(hub, hub.c.indicator_id == shared.c.indicator_id)
            .where(shared.c.kind == "account")
        )
        if account_ids is not None:
            query = query.where(held.c.account_id.in_(account_ids))
        found: dict[tuple[str, str], Match] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                if row.valid_until is not None and row.valid_until <= now:
                    continue
                base = max(row.confidence, row.corroborated or 0.0)
                last = max(row.reported_at, row.last_seen or 0.0)
                confidence = decayed(base, now - last, self.settings)
                if confidence <= 0.0:
                    continue
                match = Match(
                    row.account_id, row.indicator_id, row.kind, confidence, max(row.members or 1, 1)
                )
                pair = (row.account_id, row.indicator_id)
                if pair not in found or found[pair].confidence < confidence:
                    found[pair] = match
        return sorted(found.values(), key=lambda m: (-m.confidence, m.account_id))

    def apply(self, found: Iterable[Match]) -> dict[str, str]:
        """Raise each matched account to the tier its strongest match earns (never lower
        one); returns {account: new tier} for those changed."""
        best: dict[str, Match] = {}
        for match in found:
            if match.account_id not in best or best[match.account_id].confidence < match.confidence:
                best[match.account_id] = match
        wanted = {
            account: (tier, match.reason())
            for account, match in best.items()
            if (tier := self.tier_for(match)) is not None
        }
        return self.accounts.raise_tiers(wanted, actor=WATCHLIST_ACTOR)

    def tier_for(self, match: Match) -> str | None:
        """The tier a match earns. One organisation's word, however confident, earns
        `watch` at most: throttling or blocking an account takes the hub's count of
        CORROBORATING organisations or more (one member alone could otherwise throttle
        any account it holds an identifier of, by publishing it at confidence 100)."""
        tier = self.settings.tier_for(match.confidence)
        if tier in ("throttle", "block") and match.members < CORROBORATING:
            return "watch"
        return tier

    def shared_templates(self, now: float | None = None) -> SharedTemplates:
        """The shared prompt templates tracing should recognise: those still valid, not
        decayed to nothing, signed under a consortium key we hold."""
        now = time.time() if now is None else now
        rows: dict[int, list] = {}
        if self.keyring is None:
            return SharedTemplates.from_signatures(rows)
        query = select(watchlist.c.value, watchlist.c.reported_at, watchlist.c.valid_until).where(
            watchlist.c.kind == "template"
        )
        with self.engine.connect() as conn:
            for value, reported_at, valid_until in conn.execute(query):
                if valid_until is not None and valid_until <= now:
                    continue
                if decayed(1.0, now - reported_at, self.settings) <= 0.0:
                    continue
                key_id, signature = decode_signature(value)
                if key_id in self.keyring.keys:
                    rows.setdefault(self.keyring.minhash_seed(key_id), []).append(signature)
        return SharedTemplates.from_signatures(rows)


def sync_status(engine: Engine, now: float | None = None) -> dict[str, Any]:
    """Where this member stands with the hub: each collection's last pull, the indicators
    held (still valid) by kind, the accounts identified, and the tier raises matches made."""
    now = time.time() if now is None else now
    live = (watchlist.c.valid_until.is_(None)) | (watchlist.c.valid_until > now)
    with engine.connect() as conn:
        pulls = [
            {"collection_url": url, "pulled_at": at, "added_after": cursor}
            for url, cursor, at in conn.execute(
                select(
                    exchange_cursors.c.collection_url,
                    exchange_cursors.c.added_after,
                    exchange_cursors.c.pulled_at,
                ).order_by(exchange_cursors.c.pulled_at.desc())
            )
        ]
        held = dict(
            conn.execute(
                select(watchlist.c.kind, func.count(func.distinct(watchlist.c.indicator_id)))
                .where(live)
                .group_by(watchlist.c.kind)
            ).all()
        )
        identified = conn.execute(
            select(func.count(func.distinct(account_identifiers.c.account_id)))
        ).scalar()
        published, last_published = conn.execute(
            select(func.count(), func.max(exchange_published.c.published_at))
        ).one()
        raised = conn.execute(
            select(func.count(), func.max(tier_changes.c.ts)).where(
                tier_changes.c.actor == WATCHLIST_ACTOR
            )
        ).one()
    return {
        "pulls": pulls,
        "indicators": {str(k): int(v) for k, v in held.items()},
        "accounts_identified": int(identified or 0),
        "published": int(published or 0),
        "last_published_at": last_published,
        "tiers_raised": int(raised[0] or 0),
        "last_raised_at": raised[1],
    }


def _row(found: Indicator, value: str, kind: str, now: float) -> dict:
    return {
        "indicator_id": found.id,
        "value": value,
        "kind": kind,
        "confidence": found.confidence,
        "modified": found.modified,
        "reported_at": found.reported_at,
        "valid_until": found.valid_until,
        "publisher": found.publisher,
        "pulled_at": now,
    }


def _newer(conn, id_column, version_column, candidates: Mapping[str, Any]) -> list:
    """The candidates ({id: parsed object with .modified}) newer than the version held."""
    query = select(id_column, func.max(version_column)).group_by(id_column)
    held = {i: v for i, v in select_in(conn, query, id_column, candidates)}
    return [c for i, c in candidates.items() if i not in held or held[i] < c.modified]


CURSOR_OVERLAP_SECONDS = 60.0


def _overlapping(cursor: str | None) -> str | None:
    """Resume a minute before the cursor: a hub whose clock stepped back, or one that
    stamps whole envelopes with milliseconds, may have added objects at the cursor's
    time after we read it. Reading them again is harmless (versions are compared)."""
    if cursor is None:
        return None
    try:
        at = parse_time(cursor)
    except ValueError:
        return cursor
    return stix_time(at - timedelta(seconds=CURSOR_OVERLAP_SECONDS))
