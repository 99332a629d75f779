"""From a trace run to what we tell the other members (the mapping of docs/exchange.md).

A flagged account becomes an account indicator carrying the keyed hashes of its
identifiers, each of its prompt templates a keyed MinHash template indicator, and a
flagged cluster a campaign that its members' indicators point to. Nothing else
leaves: no account id, no prompt, no raw identifier (`stix.py` runs the privacy
check on every object). What was published once is recorded in the store, so
publishing after every run sends only what is new. `publish_run` is the whole of
`distillguard exchange publish`.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, insert, select

from distillguard.config import ExchangeSettings
from distillguard.exchange import stix
from distillguard.exchange.privacy import (
    ExchangeError,
    KeyRing,
    encode_signature,
    keyed_signature,
)
from distillguard.store import ScoreStore
from distillguard.store.schema import account_identifiers, exchange_published
from distillguard.store.sql import delete_in, select_in
from distillguard.tracing.features import Profile, describe
from distillguard.tracing.records import TraceEvent, load_events, read_accounts
from distillguard.tracing.shared import MIN_BYTES

if TYPE_CHECKING:  # the TAXII client pulls in requests: only a post needs it
    from distillguard.exchange.client import HubClient, Posted

DAY = 86_400.0
TEMPLATES_PER_ACCOUNT = 3
FILLINGS_READ = 20  # fillings of a template compared to find its fixed text


@dataclass(frozen=True)
class Flagged:
    """A flagged account or cluster of a trace run, as the store keeps it."""

    subject_id: str  # the account or cluster id (never published)
    score: float
    evidence: list[str]
    accounts: list[str] = field(default_factory=list)  # a cluster's members


@dataclass
class Publication:
    objects: list[dict]
    subjects: dict[str, str]  # what each new finding was published as: subject -> STIX id
    counts: dict[str, int]  # "accounts", "templates", "clusters" published now
    skipped: list[str]  # findings that could not be shared, and why


def identifier_hashes(engine: Engine, account_ids: Iterable[str]) -> dict[str, list[str]]:
    """The keyed identifier hashes the store holds for these accounts."""
    query = select(account_identifiers.c.account_id, account_identifiers.c.hash)
    found: dict[str, list[str]] = defaultdict(list)
    with engine.connect() as conn:
        for account_id, digest in select_in(
            conn, query, account_identifiers.c.account_id, account_ids
        ):
            found[account_id].append(digest)
    return dict(found)


def template_texts(events: Sequence[TraceEvent]) -> dict[str, list[str]]:
    """For each account, the text of each template it runs (as `Profile.templates` finds
    them; at most TEMPLATES_PER_ACCOUNT): what a template indicator is signed from.

    A template's text is what its fillings share, their common opening and closing: a
    member holding it recognises about half of the template's new fillings, one holding a
    single filling about 1 in 7 (docs/tracing.md). When fillings share too little to
    compare, the first filling stands in.
    """
    ordered = sorted(events, key=lambda e: e.ts)
    described = describe(ordered)
    profiles: dict[str, Profile] = defaultdict(Profile)
    for event, row in zip(ordered, described.rows(), strict=True):
        profiles[event.account_id].add(event, row)
    runs = {account: set(p.templates()) for account, p in profiles.items()}
    fillings: dict[str, dict[int, list[str]]] = defaultdict(dict)
    heads, tails = described.head.tolist(), described.tail.tolist()
    for event, head, tail in zip(ordered, heads, tails, strict=True):
        mine = fillings[event.account_id]
        for skeleton in (head, tail):
            if skeleton not in runs[event.account_id]:
                continue
            if skeleton not in mine and len(mine) >= TEMPLATES_PER_ACCOUNT:
                continue
            seen = mine.setdefault(skeleton, [])
            if len(seen) < FILLINGS_READ and event.text not in seen:
                seen.append(event.text)
            break  # a prompt fills one template
    texts = {}
    for account, templates in fillings.items():
        found = list(dict.fromkeys(_template_text(f) for f in templates.values() if f))
        if found:
            texts[account] = found
    return texts


def _template_text(fillings: list[str]) -> str:
    opening = _common_prefix(fillings)
    closing = _common_prefix([f[len(opening) :][::-1] for f in fillings])[::-1]
    text = f"{opening} {closing}".strip() if closing else opening
    return text if len(text.encode()) >= MIN_BYTES else fillings[0]


def _common_prefix(texts: list[str]) -> str:
    first, last = min(texts), max(texts)  # sorted, these two differ soonest
    pairs = zip(first, last, strict=False)
    size = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(first), len(last)))
    return first[:size]


def build(
    accounts: Sequence[Flagged],
    clusters: Sequence[Flagged],
    hashes: Mapping[str, list[str]],
    templates: Mapping[str, list[str]],
    keyring: KeyRing,
    settings: ExchangeSettings,
    published: Mapping[str, str],
) -> Publication:
    """The objects for the findings not yet in `published` (subject -> STIX id)."""
    if not settings.publisher:
        raise ExchangeError("set exchange.publisher: the name we publish under")
    author = stix.identity(settings.publisher)
    made: dict[str, str] = {}
    objects: list[dict] = []
    skipped: list[str] = []
    counts = {"accounts": 0, "templates": 0, "clusters": 0}
    common = {"created_by": author["id"], "tlp": settings.tlp}
    indicator_of: dict[str, str] = {}  # account -> its account indicator's id, old or new
    unidentified = 0  # flagged accounts with nothing to share: one line for all of them

    for account in accounts:
        subject = f"account:{account.subject_id}"
        if subject in published:
            indicator_of[account.subject_id] = published[subject]
            continue
        # Under the current key only: a rotated-out key may be held by a former member.
        current = f"{keyring.current.key_id}:"
        held = [h for h in hashes.get(account.subject_id, []) if h.startswith(current)]
        if not held:
            unidentified += 1
            continue
        held = sorted(set(held))
        if len(held) > stix.MAX_ACCOUNT_IDENTIFIERS:
            skipped.append(
                f"account {account.subject_id}: {len(held) - stix.MAX_ACCOUNT_IDENTIFIERS} of "
                f"its {len(held)} identifiers (an indicator holds {stix.MAX_ACCOUNT_IDENTIFIERS})"
            )
            held = held[: stix.MAX_ACCOUNT_IDENTIFIERS]
        indicator = stix.account_indicator(
            held,
            score=account.score,
            evidence=_shareable(account.evidence),
            valid_days=settings.valid_days,
            **common,
        )
        objects.append(indicator)
        made[subject] = indicator_of[account.subject_id] = indicator["id"]
        counts["accounts"] += 1

    for account in accounts:
        texts = templates.get(account.subject_id, [])
        if not texts:
            continue
        key = keyring.current
        for row in keyed_signature(key, texts):
            signature = encode_signature(key.key_id, row)
            subject = f"template:{signature}"
            if subject in published or subject in made:
                continue
            indicator = stix.template_indicator(
                signature, score=account.score, valid_days=settings.valid_days, **common
            )
            objects.append(indicator)
            made[subject] = indicator["id"]
            counts["templates"] += 1

    memberless = 0
    for cluster in clusters:
        members = sorted(indicator_of[a] for a in cluster.accounts if a in indicator_of)
        if not members:
            memberless += 1
            continue
        # One campaign per set of member indicators: a cluster that grows is told again.
        digest = hashlib.sha256("\n".join(members).encode()).hexdigest()[:16]
        subject = f"cluster:{digest}"
        if subject in published:
            continue
        campaign, *relationships = stix.cluster_campaign(
            f"Distillation operation {digest}",
            indicator_ids=members,
            accounts=len(cluster.accounts),
            score=cluster.score,
            evidence=_shareable(cluster.evidence),
            **common,
        )
        objects += [campaign, *relationships]
        made[subject] = campaign["id"]
        counts["clusters"] += 1

    if unidentified:  # the clusters' reason too, when they have no member to name
        also = f", nor so {memberless} of {len(clusters)} flagged clusters" if memberless else ""
        skipped.append(
            f"{unidentified} of {len(accounts)} flagged accounts{also}: no identifiers on record "
            f"under the current key {keyring.current.key_id} (pass --accounts with their signup "
            "records, or run `distillguard accounts identify`)"
        )
    elif memberless:
        skipped.append(f"{memberless} of {len(clusters)} flagged clusters: no member published")
    if objects:
        objects.insert(0, author)
    return Publication(objects, made, counts, skipped)


def _shareable(evidence: Sequence[str]) -> list[str]:
    """The first three evidence lines that name nothing local (a cluster id is ours)."""
    return [line for line in evidence if "cluster c" not in line][:3]


def already_published(engine: Engine, settings: ExchangeSettings) -> dict[str, str]:
    """What was published recently enough to stand: a finding published more than half
    its validity ago is published again, so that its indicator never lapses at the
    other members while we still flag it."""
    fresh_after = time.time() - settings.valid_days * DAY / 2
    query = select(exchange_published.c.subject, exchange_published.c.stix_id).where(
        exchange_published.c.published_at > fresh_after
    )
    with engine.connect() as conn:
        return {subject: stix_id for subject, stix_id in conn.execute(query)}


def record(engine: Engine, publication: Publication, accepted: set[str]) -> int:
    """Remember the findings whose object the hub took (`accepted` STIX ids), in one
    transaction, so a retry after a partial failure sends only the rest."""
    now = time.time()
    rows = [
        {"subject": s, "stix_id": i, "published_at": now}
        for s, i in publication.subjects.items()
        if i in accepted
    ]
    if rows:
        with engine.begin() as conn:
            delete_in(conn, exchange_published.c.subject, [r["subject"] for r in rows])
            conn.execute(insert(exchange_published), rows)
    return len(rows)


@dataclass(frozen=True)
class RunPublished:
    """What `publish_run` did with one trace run."""

    run_id: int
    publication: Publication
    posted: Posted | None  # None: nothing was posted (no client, or nothing new)


def publish_run(
    engine: Engine,
    keyring: KeyRing,
    settings: ExchangeSettings,
    client: HubClient | None,
    *,
    note: Callable[[str], None],
    run: int | None = None,
    events: Path | None = None,
    accounts: Path | None = None,
) -> RunPublished:
    """Publish what a trace run (default: the latest) flagged and was not published before.

    Templates come from `events` (default: the store's event log), identifiers from the
    store and from an `accounts` file. Without a client the objects are only built (for a
    bundle file). Findings that cannot be shared and objects the hub refuses go to `note`;
    a post that stops short raises after recording what was taken, so that running again
    sends only the rest.
    """
    scores = ScoreStore(engine)
    run_id = run if run is not None else scores.latest_run()
    if run_id is None:
        raise ExchangeError("no trace run in the store: run `distillguard trace run` first")
    account_rows, cluster_rows = scores.flagged(run_id)
    flagged = [Flagged(r["account_id"], r["score"], r["evidence"]) for r in account_rows]
    clusters = [
        Flagged(r["cluster_id"], r["score"], r["evidence"], r["accounts"]) for r in cluster_rows
    ]
    wanted = {f.subject_id for f in flagged}
    hashes = identifier_hashes(engine, wanted)
    if accounts is not None:
        for account in read_accounts(accounts).values():
            if account.account_id in wanted:
                given = [("email", account.email), ("payment", account.payment_fingerprint)]
                hashes.setdefault(account.account_id, []).extend(
                    keyring.hash(kind, value) for kind, value in given if value
                )
    examples, _ = load_events(events, engine, wanted)
    if wanted and not examples:
        where = events if events is not None else "the store's event log"
        note(
            f"no events of the run's flagged accounts in {where}: no templates shared "
            "(pass --events with the file the run traced)"
        )
    publication = build(
        flagged,
        clusters,
        {a: sorted(set(h)) for a, h in hashes.items()},
        template_texts(examples),
        keyring,
        settings,
        already_published(engine, settings),
    )
    for reason in publication.skipped:
        note(f"not shared: {reason}")
    if client is None or not publication.objects:
        return RunPublished(run_id, publication, None)
    posted = client.publish(publication.objects)
    recorded = record(engine, publication, posted.accepted)
    for failure in posted.failures:
        note(f"refused by the hub: {failure}")
    if posted.error is not None or posted.failures:
        raise ExchangeError(
            f"published {recorded} of {len(publication.subjects)} findings "
            f"({len(posted.accepted)} objects taken); {posted.error or 'the hub refused some'}"
            " — run publish again to send the rest"
        )
    return RunPublished(run_id, publication, posted)
