"""Who takes part in the demo: a simulated provider's population, and what each one is.

The traffic comes from distillguard's own simulator (`tracing.simulate`): its archetypes
of benign users and distillers, shortened to one or two days so that it replays in
minutes. Every account has a role the outcomes are judged by.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from distillguard.tracing.simulate.archetypes import ARCHETYPES
from distillguard.tracing.simulate.corpus import find_corpus, load_corpus
from distillguard.tracing.simulate.world import World

# Heavy users a provider must keep serving: pipelines, evaluation harnesses, agents, research.
HEAVY = frozenset({"coding_power_user", "batch_job", "eval_runner", "researcher", "aggregator"})
# Distillers whose accounts each carry the harvest (a hydra spreads it over many).
HARVESTERS = frozenset({"bulk_harvester", "cot_harvester", "capability_sweep"})

QUICK_CAST: dict = {
    "days": 1,
    "mix": {
        "casual": 40,
        "coding_power_user": 2,
        "batch_job": 1,
        "eval_runner": 1,
        "researcher": 1,
        "bulk_harvester": 1,
        "cot_harvester": 1,
        "capability_sweep": 1,
    },
    "hydra": 250,
    "most_per_account": 1_000,
}
FULL_CAST: dict = {
    "days": 2,
    "mix": {
        "casual": 150,
        "coding_power_user": 5,
        "batch_job": 3,
        "eval_runner": 3,
        "researcher": 3,
        "aggregator": 1,
        "bulk_harvester": 3,
        "cot_harvester": 2,
        "capability_sweep": 2,
    },
    "hydra": 300,
    "most_per_account": None,
}


@dataclass
class Cast:
    events: list[dict]  # simulated requests in time order (the tracing contract's rows)
    accounts: dict[str, dict]  # account_id -> signup record (email, card, signup IP)
    archetype: dict[str, str]  # account_id -> archetype
    days: int

    def role(self, account_id: str) -> str:
        kind = self.archetype[account_id]
        if kind in HEAVY:
            return "heavy legitimate"
        if kind in HARVESTERS:
            return "harvester"
        if kind == "hydra":
            return "hydra member"
        return "casual"

    def members(self, role: str) -> list[str]:
        return sorted(a for a in self.accounts if self.role(a) == role)


def cast(quick: bool, seed: int) -> Cast:
    plan = QUICK_CAST if quick else FULL_CAST
    world = World(load_corpus(find_corpus(None)), random.Random(seed), days=plan["days"])
    for archetype, count in plan["mix"].items():
        for i in range(count):
            ARCHETYPES[archetype](world, f"{archetype}-{i:04d}")
    # The smallest hydra the simulator makes: an operation, and few enough to sign up fast.
    ARCHETYPES["hydra"](world, "hydra-0000", size=plan["hydra"])
    kinds = {row["account_id"]: row["archetype"] for row in world.labels}
    events = sorted(world.events, key=lambda e: e["ts"])
    if plan["most_per_account"] is not None:  # each account's first requests of the day
        sent: Counter = Counter()
        kept = []
        for event in events:
            sent[event["account_id"]] += 1
            if sent[event["account_id"]] <= plan["most_per_account"]:
                kept.append(event)
        events = kept
    active = {e["account_id"] for e in events}
    accounts = {a["account_id"]: a for a in world.accounts if a["account_id"] in active}
    return Cast(events, accounts, {a: kinds[a] for a in accounts}, plan["days"])
