"""`distillguard simulate`: a week of a provider's traffic, benign and hostile, with labels.

A scenario is a mix of archetypes (archetypes.py) and how many actors of
each; `scale` multiplies the counts (at least one of each stays). Output, in
the tracing contract (docs/tracing.md): `events.jsonl` in time order,
`accounts.jsonl`, and `labels.jsonl` (`account_id`, `label`, `archetype`,
`actor`: the true operator, so that linkage can be scored).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from distillguard.errors import DistillguardError
from distillguard.tracing.simulate.archetypes import ARCHETYPES
from distillguard.tracing.simulate.corpus import load_corpus
from distillguard.tracing.simulate.world import World

BENIGN_BACKGROUND = {
    "casual": 1500,
    "coding_power_user": 120,
    "researcher": 60,
    "batch_job": 50,
    "eval_runner": 30,
    "aggregator": 6,
    "autocomplete_user": 40,
    "org_seats": 4,
}
SCENARIOS: dict[str, dict[str, int]] = {
    # Every archetype, attackers a small minority of accounts as in real traffic.
    "default": {
        **BENIGN_BACKGROUND,
        "bulk_harvester": 8,
        "cot_harvester": 8,
        "multilingual_harvester": 4,
        "capability_sweep": 8,
        "hydra": 2,
        "reseller": 4,
        "human_mimic": 8,
        "logit_prober": 4,
        "text_scorer": 4,
    },
    # Held-out mixes: the detector was not tuned on these.
    "hydra-swarm": {**BENIGN_BACKGROUND, "hydra": 6},
    "hidden": {**BENIGN_BACKGROUND, "reseller": 10, "human_mimic": 15},
    # Attackers who read docs/tracing.md and stay under its anchors: what evades, measured.
    "evasive": {
        **BENIGN_BACKGROUND,
        "paced_harvester": 10,
        "sleeper_hydra": 2,
        "synchronised_hydra": 2,
    },
    "heavy-benign": {
        "casual": 300,
        "coding_power_user": 300,
        "batch_job": 150,
        "eval_runner": 80,
        "aggregator": 20,
        "autocomplete_user": 100,
        "researcher": 100,
        "org_seats": 6,
        "bulk_harvester": 3,
        "cot_harvester": 3,
    },
}


def simulate(
    scenario: str, out: Path, corpus_dir: Path, seed: int = 0, scale: float = 1.0
) -> dict[str, int]:
    """Write the scenario's three files into `out`; returns counts for the summary."""
    if scenario not in SCENARIOS:
        raise DistillguardError(
            f"unknown scenario {scenario!r}; choose one of {', '.join(sorted(SCENARIOS))}"
        )
    if not 0 < scale <= 100:
        raise DistillguardError(f"--scale must be in (0, 100], got {scale}")
    world = World(load_corpus(corpus_dir), random.Random(seed))
    for archetype, count in SCENARIOS[scenario].items():
        for i in range(max(1, round(count * scale))):
            ARCHETYPES[archetype](world, f"{archetype}-{i:04d}")
    world.events.sort(key=lambda e: e["ts"])
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (
        ("events", world.events),
        ("accounts", world.accounts),
        ("labels", world.labels),
    ):
        _write_jsonl(out / f"{name}.jsonl", rows)
    attackers = sum(label["label"] == "attacker" for label in world.labels)
    return {"events": len(world.events), "accounts": len(world.accounts), "attackers": attackers}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write to a temporary name and rename: a reader never sees half a file."""
    partial = path.with_suffix(".jsonl.partial")
    with partial.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    partial.replace(path)
