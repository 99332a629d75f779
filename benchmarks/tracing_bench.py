"""Tracing speed: feature ingest on one core, and a whole batch run of ~1M events.

    python benchmarks/tracing_bench.py [--scale 1.9] [--seed 0]

Traffic is the simulator's default scenario (`--scale 1.9` gives ~1M events), written
once to a cache directory and reused. The process is pinned to one CPU core. Side by
side in one run:

* **JSON decode only** (msgspec, no validation): what reading the file costs at least,
  the reference that makes the other figures comparable across machines;
* **read**: the events decoded, validated and mapped (`read_events`);
* **feature ingest**: every event described (reasoning request, area, MinHash, template
  skeletons) and added to its account's profile: what the online tracer does per event
  (target >= 50,000 events/s);
* **batch run**: `trace()` on every event: describe, online replay with scoring at
  checkpoints, linkage, cluster replay (target: 1M events in <= 60 s).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import msgspec

from common import SHARED_PROMPTS, save
from distillguard.tracing.features import Profile, describe
from distillguard.tracing.records import read_accounts, read_events
from distillguard.tracing.run import BATCH, trace
from distillguard.tracing.simulate import simulate


def traffic(scale: float, seed: int) -> Path:
    out = Path(tempfile.gettempdir()) / f"distillguard-tracing-bench-{scale}-{seed}"
    if not (out / "labels.jsonl").exists():  # labels are written last
        print(f"simulating into {out} ...", flush=True)
        simulate("default", out, SHARED_PROMPTS, seed=seed, scale=scale)
    return out


def timed(label: str, work) -> tuple[float, object]:
    start = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - start
    print(f"{label}: {seconds:.1f} s", flush=True)
    return seconds, result


def ingest(events) -> int:
    profiles: dict[str, Profile] = defaultdict(Profile)
    for start in range(0, len(events), BATCH):
        chunk = events[start : start + BATCH]
        for event, row in zip(chunk, describe(chunk).rows(), strict=True):
            profiles[event.account_id].add(event, row)
    return len(profiles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.9)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    directory = traffic(args.scale, args.seed)
    path = directory / "events.jsonl"

    def decode_only() -> int:
        decoder = msgspec.json.Decoder()
        with path.open("rb") as handle:
            return sum(1 for line in handle if decoder.decode(line) is not None)

    decode_s, n = timed("JSON decode only", decode_only)
    read_s, events = timed("read + validate", lambda: list(read_events(path)))
    accounts = read_accounts(directory / "accounts.jsonl")
    events.sort(key=lambda e: e.ts)
    ingest_s, _ = timed("feature ingest", lambda: ingest(events))
    batch_s, result = timed("batch run (trace)", lambda: trace(events, accounts))

    rows = {
        "JSON decode only": (decode_s, n),
        "read + validate": (read_s, len(events)),
        "feature ingest (describe + profile)": (ingest_s, len(events)),
        "batch run: trace() on every event": (batch_s, len(events)),
        "batch run incl. reading the file": (read_s + batch_s, len(events)),
    }
    report = {
        "settings": vars(args),
        "events": len(events),
        "accounts": len(result.accounts),
        "clusters": len(result.clusters),
        "rows": {k: {"seconds": s, "events_per_second": m / s} for k, (s, m) in rows.items()},
    }
    print(f"\n{len(events):,} events, {len(result.accounts):,} accounts, one core\n")
    print("| step | seconds | events/s | × JSON decode time |")
    print("|---|---|---|---|")
    for name, (seconds, m) in rows.items():
        print(f"| {name} | {seconds:.1f} | {m / seconds:,.0f} | {seconds / decode_s:.1f} |")
    print(f"wrote {save('tracing_bench', report)}")


if __name__ == "__main__":
    main()
