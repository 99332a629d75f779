"""Online tracing inside the gateway: every stored event also updates its account's profile.

The event writer thread hands each written batch to `OnlineTracer.observe`, off
the request path. Accounts are scored at the same checkpoints as the batch
replay (`run.is_checkpoint`); one that earns a higher tier (tracing settings)
is raised in the store at once, and every replica applies it at its next key
refresh. In shadow mode the tracer logs and counts the tier it would set and
changes nothing.

Each replica sees only its own share of an account's traffic and keeps at most
`capacity` profiles (least recently seen dropped first); cluster linkage needs
the whole population. The periodic `distillguard trace run --apply-tiers` over
the shared store is the complete view; this is the fast one.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from distillguard import metrics
from distillguard.config import TracingSettings
from distillguard.policy import TIERS
from distillguard.store import AccountStore, Event
from distillguard.tracing.features import Profile, Releases, describe
from distillguard.tracing.records import InputReport, events_from_rows
from distillguard.tracing.run import is_checkpoint
from distillguard.tracing.scoring import assess, evidence
from distillguard.tracing.shared import SharedTemplates

log = logging.getLogger(__name__)
_RANK = {tier: i for i, tier in enumerate(TIERS)}


@dataclass(frozen=True)
class Checkpoint:
    account_id: str
    score: float
    features: dict[str, float]


class OnlineTracer:
    def __init__(
        self,
        accounts: AccountStore,
        settings: TracingSettings,
        shadow: bool = False,
        capacity: int = 50_000,
        *,
        shared: SharedTemplates | None = None,
    ) -> None:
        self.accounts = accounts
        # Templates other providers shared; replace it (`self.shared = ...`) when the
        # exchange's watchlist changes: the next batch reads the new set.
        self.shared = shared
        self.settings = settings
        self.shadow = shadow
        self.capacity = capacity
        self._profiles: OrderedDict[str, Profile] = OrderedDict()
        self._raised: dict[str, str] = {}  # the tier this tracer last set (or would have)
        self._releases = Releases()

    def observe(self, batch: Sequence[Event]) -> None:
        """Fold a batch of stored events into the profiles; raise tiers that were earned."""
        wanted: dict[str, tuple[str, str]] = {}
        # vars(), not asdict(): a shallow view; asdict would deep-copy every request body.
        for checkpoint in self.scored(vars(e) for e in batch):
            tier = self.settings.tier_for(checkpoint.score)
            account_id = checkpoint.account_id
            # The highest tier earned so far, in this batch too: a later, lower checkpoint of
            # the same batch must not undo a higher one.
            already = wanted[account_id][0] if account_id in wanted else None
            already = already or self._raised.get(account_id, "normal")
            if tier is not None and _RANK[tier] > _RANK[already]:
                reason = f"online tracing score {checkpoint.score:.2f}: " + "; ".join(
                    evidence(checkpoint.features)[:3]
                )
                wanted[account_id] = (tier, reason)
        if wanted:
            self._apply(wanted)  # remembered only once applied: a store outage is retried

    def scored(self, rows: Iterable[dict[str, Any]]) -> Iterator[Checkpoint]:
        """Fold a batch of event rows (the store's columns) into the profiles; yields each
        account's score at its checkpoints. Changes no tier."""
        events = list(events_from_rows(rows, InputReport("gateway")))
        if not events:
            return
        for event, row in zip(events, describe(events, self.shared).rows(), strict=True):
            self._releases.see(event)
            profile = self._profile(event.account_id)
            profile.add(event, row)
            if is_checkpoint(profile.requests):
                features = profile.features(self._releases)
                yield Checkpoint(event.account_id, assess(features).score, features)

    def _profile(self, account_id: str) -> Profile:
        profile = self._profiles.get(account_id)
        if profile is None:
            profile = self._profiles[account_id] = Profile()
            if len(self._profiles) > self.capacity:
                self._profiles.popitem(last=False)
        else:
            self._profiles.move_to_end(account_id)
        return profile

    def _apply(self, wanted: dict[str, tuple[str, str]]) -> None:
        if self.shadow:
            for account_id, (tier, reason) in wanted.items():
                log.warning("shadow: would raise %s to %s (%s)", account_id, tier, reason)
                metrics.TRACING_TIERS.labels(tier, "shadow").inc()
                self._raised[account_id] = tier
            return
        changed = self.accounts.raise_tiers(wanted, actor="online tracing")
        for account_id, (tier, _) in wanted.items():
            self._raised[account_id] = tier  # raised now, or already at least this high
        for account_id, tier in changed.items():
            log.warning("raised %s to %s (%s)", account_id, tier, wanted[account_id][1])
            metrics.TRACING_TIERS.labels(tier, "enforced").inc()
