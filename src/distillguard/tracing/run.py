"""`distillguard trace run`: events in, per-account and per-cluster risk out.

1. Every event is described once (reasoning asked for, capability area,
   MinHash bands, template skeletons), a batch at a time.
2. An **online replay** feeds each account's events, in time order, to its
   `Profile` and scores it at checkpoints: the first checkpoint that flags it
   is `flagged_after_requests` (what the gateway's online tracer would have
   known at that moment).
3. **Linkage** joins accounts that share payment, network, email pattern,
   client, template or signup burst into clusters (linkage.py).
4. A cluster is one **operation** when at least two of its members carry
   extractive traffic (of that kind, however little each sends) and they are
   tied to each other by what one operator reuses (cards, a signup script, one
   scheduler): its crew. The crew's events are replayed into one `Profile`,
   so 1,000 accounts of 50 requests are judged as one actor of 50,000; each
   crew member takes the operation's score when that is higher, and
   `flagged_after_requests` then counts its requests up to the moment the
   operation was first flagged. Bystanders (colleagues behind one office IP or
   one invoice) keep their own score.
5. A careful hydra shares nothing linkage can see. Its trace is the **crowd**:
   light accounts (under CROWD_TRACES distinct prompts each, too few to distil
   from alone) whose own traffic is steadily extractive. A few such accounts
   are in any population; far more of them than the population's base rate
   explains is a surge, and the crowd is then judged as one actor on its
   combined traffic, its verdict carried to each member.
"""

from __future__ import annotations

import bisect
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields

import numpy as np
from scipy.stats import poisson

from distillguard.tracing import linkage
from distillguard.tracing.features import Described, Profile, Releases, describe
from distillguard.tracing.records import AccountRecord, TraceEvent
from distillguard.tracing.scoring import FLAG_AT, assess, evidence, kind
from distillguard.tracing.shared import SharedTemplates

BATCH = 8192
# A member whose traffic is of this extractive kind (however little of it) carries an
# operation's product ...
CARRIES = 0.3
EXPLAINED = 0.5  # ... unless its own benign evidence is this strong
OPERATION_MIN = 2  # ... and this many carriers tied by what one operator reuses: an operation
# The crowd (see the module's docstring). Light: fewer distinct prompts than this (a
# tenth of what the scale ramp starts at would take a hydra thousands of accounts).
CROWD_TRACES = 100
# Light accounts with steadily extractive traffic and no benign explanation, as a share of
# all active accounts, where no hydra hides: 0-0.14 % of the benign accounts in every week
# measured, independent and simulated (docs/tracing.md); set above the highest.
CROWD_BASE = 0.002
CROWD_ALPHA = 1e-4  # a crowd this unlikely under the base rate is a surge
CROWD = "crowd"
MAX_TIES = 500  # tie groups kept per cluster for its graph: a hydra's pairs can be thousands


@dataclass
class AccountResult:
    account_id: str
    score: float
    flagged: bool
    cluster_id: str | None
    flagged_after_requests: int | None
    evidence: list[str]
    requests: int

    def public(self) -> dict:
        return {
            "account_id": self.account_id,
            "score": round(self.score, 4),
            "flagged": self.flagged,
            "cluster_id": self.cluster_id,
            "flagged_after_requests": self.flagged_after_requests,
            "evidence": self.evidence,
            "requests": self.requests,
        }


@dataclass
class ClusterResult:
    cluster_id: str
    accounts: list[str]
    score: float
    flagged: bool
    evidence: list[str]
    first_flagged_ts: float | None = None
    operation: bool = False  # judged as one actor: its verdict carries over to its crew
    # What ties members to one operator, [{"kind": "payment", "accounts": [...]}, ...]:
    # the console draws it as a graph. At most MAX_TIES groups; values are never kept.
    ties: list[dict] = field(default_factory=list)

    def public(self) -> dict:
        return {
            "cluster_id": self.cluster_id,
            "accounts": self.accounts,
            "score": round(self.score, 4),
            "flagged": self.flagged,
            "evidence": self.evidence,
            "ties": self.ties,
        }


@dataclass
class TraceResult:
    accounts: list[AccountResult]
    clusters: list[ClusterResult]
    events: int
    crowd: ClusterResult | None = None  # a surge of light extractive accounts, judged as one

    def document(self) -> dict:
        """The `--json` document of docs/tracing.md."""
        return {
            "accounts": [a.public() for a in self.accounts],
            "clusters": [c.public() for c in self.clusters],
            "crowd": self.crowd.public() if self.crowd else None,
        }


def is_checkpoint(requests: int) -> bool:
    """Score after each of the first 32 requests, then about every 3 % more."""
    return requests <= 32 or requests % (requests // 32) == 0


def trace(
    events: Iterable[TraceEvent],
    accounts: Mapping[str, AccountRecord],
    *,
    shared: SharedTemplates | None = None,
    flag_at: float = FLAG_AT,
) -> TraceResult:
    """`shared`: templates other providers shared (keyed MinHash signatures); a prompt
    that fills one counts as templated from its first occurrence. `flag_at`: the score
    that flags (the `tracing.throttle_at` setting; `trace calibrate` derives one from a
    target false-positive rate)."""
    ordered = sorted(events, key=lambda e: e.ts)
    described = _describe_all(ordered, shared)
    releases = Releases()
    for event in ordered:
        releases.see(event)
    profiles, first_flag = _replay(ordered, described, flag_at, key=lambda e: e.account_id)
    own = {a: _Own.of(p, releases) for a, p in profiles.items()}

    things = {
        account_id: linkage.account_things(
            accounts.get(account_id),
            sorted(profile.ips),
            sorted(profile.agents),
            profile.templates(),
        )
        for account_id, profile in profiles.items()
    }
    for account_id in accounts.keys() - profiles.keys():  # signed up, never sent a request
        things[account_id] = linkage.account_things(accounts[account_id], (), (), ())
    found = linkage.clusters(things, _synchronised(ordered))
    cluster_of = {a: c.cluster_id for c in found for a in c.accounts}

    # An operation is judged on its product: the combined traffic of the members that carry
    # it and are tied to each other by what one operator reuses, not of the colleagues or
    # strangers linkage put beside them.
    crews = {c.cluster_id: _crew(c, own) for c in found}
    crew_of = {a: cluster_id for cluster_id, crew in crews.items() for a in crew}
    crowd = _crowd(own, crew_of.keys())
    crew_of |= dict.fromkeys(crowd, CROWD)
    member_rows = [i for i, e in enumerate(ordered) if e.account_id in crew_of]
    cluster_profiles, cluster_flagged_since = _replay(
        [ordered[i] for i in member_rows],
        described.take(np.asarray(member_rows, dtype=np.int64)),
        flag_at,
        key=lambda e: crew_of[e.account_id],
        flag_time=True,
    )
    clusters = [
        _cluster_result(
            c,
            crews[c.cluster_id],
            cluster_profiles.get(c.cluster_id),
            cluster_flagged_since,
            releases,
            own,
            flag_at,
        )
        for c in found
    ]
    by_id = {c.cluster_id: c for c in clusters}
    crowd_result = _crowd_result(
        crowd, cluster_profiles.get(CROWD), cluster_flagged_since, releases, own, flag_at
    )
    times = _request_times(ordered)

    results = []
    for account_id in sorted(profiles.keys() | accounts.keys()):
        profile = profiles.get(account_id, Profile())
        mine = own.get(account_id)
        said = list(mine.evidence) if mine else ["no requests"]
        cluster = by_id.get(cluster_of.get(account_id, ""))
        score = mine.score if mine else 0.0
        flagged_after = first_flag.get(account_id)
        # An operation's verdict carries over to each member that carries its product (a
        # hydra's small accounts each look harmless), never to a bystander linkage put
        # beside them (a colleague behind the same office IP or invoice).
        actor = crowd_result if account_id in crowd else cluster
        if actor is not None and account_id in crew_of and actor.score > score:
            score = actor.score
            said.append(
                f"one of {crowd_result.evidence[0]}"
                if actor is crowd_result
                else f"member of operation {actor.cluster_id} ({len(actor.accounts)} accounts)"
            )
            if actor.first_flagged_ts is not None:
                seen = bisect.bisect_right(times.get(account_id, []), actor.first_flagged_ts)
                via_cluster = max(seen, 1)
                if flagged_after is None or via_cluster < flagged_after:
                    flagged_after = via_cluster
        flagged = score >= flag_at
        if flagged and flagged_after is None:  # flagged by the whole, after the last checkpoint
            flagged_after = profile.requests or None
        results.append(
            AccountResult(
                account_id=account_id,
                score=score,
                flagged=flagged,
                cluster_id=cluster.cluster_id if cluster else None,
                flagged_after_requests=flagged_after if flagged else None,
                evidence=said,
                requests=profile.requests,
            )
        )
    return TraceResult(results, clusters, len(ordered), crowd_result)


def _describe_all(events: list[TraceEvent], shared: SharedTemplates | None = None) -> Described:
    parts = [describe(events[i : i + BATCH], shared) for i in range(0, len(events), BATCH)]
    if not parts:
        return describe([], shared)
    columns = [[getattr(p, f.name) for p in parts] for f in fields(Described)]
    return Described(*(None if c[0] is None else np.concatenate(c) for c in columns))


def _replay(events, described: Described, flag_at: float, key, flag_time: bool = False):
    """Feed events in order into one Profile per `key(event)`; note when each first flags.

    Returns the profiles and, per key, the request count (or, with
    `flag_time`, the event time) at the first flagging checkpoint.
    """
    profiles: dict[str, Profile] = defaultdict(Profile)
    first: dict[str, float] = {}
    releases = Releases()  # as known at each moment: no look-ahead
    for event, row in zip(events, described.rows(), strict=True):
        releases.see(event)
        name = key(event)
        profile = profiles[name]
        profile.add(event, row)
        checkpoint = name not in first and is_checkpoint(profile.requests)
        if checkpoint and assess(profile.features(releases)).score >= flag_at:
            first[name] = event.ts if flag_time else profile.requests
    return dict(profiles), first


def _crew(cluster: linkage.Cluster, own: Mapping[str, _Own]) -> set[str]:
    """The members that make the cluster one operation: they carry extractive traffic (of
    that kind, however little each sends) and are tied to each other by what one operator
    reuses (cards, a signup script, one scheduler). Fewer than OPERATION_MIN: none."""
    carrying = {a for a in cluster.accounts if a in own and own[a].carries}
    crew = cluster.tied(carrying)
    return crew if len(crew) >= OPERATION_MIN else set()


def _cluster_result(
    cluster: linkage.Cluster,
    crew: set[str],
    profile: Profile | None,
    flagged_since: Mapping[str, float],
    releases: Releases,
    own: Mapping[str, _Own],
    flag_at: float,
) -> ClusterResult:
    """An operation (a crew, see `_crew`) is judged as one actor on its crew's combined
    traffic: a hydra's members each look light and harmless, their sum does not. Any other
    cluster (colleagues or strangers behind one office IP, cloud or client library) is as
    suspicious as its typical member, and each member stands on its own score."""
    said = [cluster.links()]
    ties = [{"kind": kind, "accounts": sorted(group)} for kind, group in cluster.ties[:MAX_TIES]]
    active = [own[a] for a in cluster.accounts if a in own]
    if not active:
        return ClusterResult(cluster.cluster_id, cluster.accounts, 0.0, False, said, ties=ties)
    if crew and profile is not None:
        said.append(
            f"one operation: {len(crew)} of {len(active)} active accounts carry extractive "
            "traffic and share what one operator reuses (cards, a signup script, one "
            "scheduler); judged on their combined traffic"
        )
        features = profile.features(releases)
        score, first_flagged = assess(features).score, flagged_since.get(cluster.cluster_id)
        said += evidence(features)
    else:
        carriers = sum(m.carries for m in active)
        said.append(
            f"not one operation ({carriers} of {len(active)} active accounts carry "
            "extractive traffic): scored as its typical member"
        )
        # The lower median: of a distiller and one bystander, the bystander is typical.
        score, first_flagged = statistics.median_low(m.score for m in active), None
    return ClusterResult(
        cluster.cluster_id,
        cluster.accounts,
        score,
        score >= flag_at,
        said,
        first_flagged,
        operation=bool(crew),
        ties=ties,
    )


def _crowd(own: Mapping[str, _Own], judged: Iterable[str]) -> set[str]:
    """The light accounts of steadily extractive traffic outside any operation, when there
    are far more of them than the population's base rate explains (a surge); else none."""
    taken = set(judged)
    light = {a for a, mine in own.items() if mine.light_carrier and a not in taken}
    expected = CROWD_BASE * len(own)
    surge = len(light) >= OPERATION_MIN and poisson.sf(len(light) - 1, expected) < CROWD_ALPHA
    return light if surge else set()


def _crowd_result(
    crowd: set[str],
    profile: Profile | None,
    flagged_since: Mapping[str, float],
    releases: Releases,
    own: Mapping[str, _Own],
    flag_at: float,
) -> ClusterResult | None:
    """The crowd judged as one actor on its members' combined traffic."""
    if not crowd or profile is None:
        return None
    expected = CROWD_BASE * len(own)
    features = profile.features(releases)
    score = assess(features).score
    said = [
        f"{len(crowd)} light accounts (under {CROWD_TRACES} distinct prompts each) whose "
        f"own traffic is steadily extractive, where the population's base rate explains "
        f"{expected:.0f}; nothing else links them, their combined traffic is judged as one"
    ]
    said += evidence(features)
    return ClusterResult(
        CROWD, sorted(crowd), score, score >= flag_at, said, flagged_since.get(CROWD), True
    )


@dataclass(frozen=True)
class _Own:
    """An account judged on its own traffic."""

    score: float
    carries: bool
    evidence: tuple[str, ...]
    # Too light to distil from alone, and extractive at its own (shrunk) rates: what a
    # careful hydra's members look like one by one (see CROWD_TRACES).
    light_carrier: bool = False

    @classmethod
    def of(cls, profile: Profile, releases: Releases) -> _Own:
        features = profile.features(releases)
        assessment = assess(features)
        # Extractive in kind, and not explained by the account's own benign evidence (an
        # evaluation's re-runs, a temperature sweep, labels): a researcher whose sweep the
        # crew's combined traffic would no longer show as bounded carries nothing.
        explained = assessment.components["benign"] >= EXPLAINED
        carries = kind(features) >= CARRIES and not explained
        light_carrier = (
            features["traces"] < CROWD_TRACES
            and assessment.components["extraction"] >= CARRIES
            and not explained
        )
        return cls(assessment.score, carries, tuple(evidence(features)), light_carrier)


def _synchronised(events: list[TraceEvent]) -> list[tuple[str, str]]:
    numbers: dict[str, int] = {}
    who = np.fromiter((numbers.setdefault(e.account_id, len(numbers)) for e in events), np.int64)
    ts = np.fromiter((e.ts for e in events), np.float64, len(events))
    return linkage.synchronised(list(numbers), who, ts)


def _request_times(events: list[TraceEvent]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = defaultdict(list)
    for event in events:  # already in time order
        times[event.account_id].append(event.ts)
    return times


def summary(result: TraceResult) -> dict[str, int]:
    flagged = Counter(a.flagged for a in result.accounts)
    return {
        "events": result.events,
        "accounts": len(result.accounts),
        "flagged_accounts": flagged[True],
        "clusters": len(result.clusters),
        "flagged_clusters": sum(c.flagged for c in result.clusters),
        "crowd_accounts": len(result.crowd.accounts) if result.crowd else 0,
    }
