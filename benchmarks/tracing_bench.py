"""Tracing speed: feature ingest on one core, and a whole batch run of ~1M events.

    python benchmarks/tracing_bench.py [--scale 1.9] [--seed 0] [--shared 1000]
    python benchmarks/tracing_bench.py --match-experiment   # shared templates' threshold

Traffic is the simulator's default scenario (`--scale 1.9` gives ~1M events), written
once to a cache directory and reused. The process is pinned to one CPU core. Side by
side in one run:

* **JSON decode only** (msgspec, no validation): what reading the file costs at least,
  the reference that makes the other figures comparable across machines;
* **read**: the events decoded, validated and mapped (`read_events`);
* **feature ingest**: every event described (reasoning request, area, MinHash, template
  skeletons) and added to its account's profile: what the online tracer does per event
  (target >= 50,000 events/s);
* **feature ingest with shared templates**: the same, every prompt also matched against
  `--shared` keyed MinHash signatures other providers shared (half of them fillings of
  the simulator's sweep templates, half ordinary corpus prompts), beside the same ingest
  without them, both with the caches the first ingest warmed (each run twice, in turn;
  the faster of each is reported), and the ratio;
* **batch run**: `trace()` on every event: describe, online replay with scoring at
  checkpoints, linkage, cluster replay (target: 1M events in <= 60 s).

`--match-experiment` instead measures, on the shared prompt corpus, how often a template
filled with new inputs and an ordinary prompt reach each candidate similarity threshold
against keyed signatures of filled templates (how `shared.MATCH_AT` was chosen).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import msgspec
import numpy as np

from common import SHARED_PROMPTS, corpus_prompts, save
from distillguard.tracing import minhash
from distillguard.tracing.features import Profile, describe
from distillguard.tracing.records import read_accounts, read_events
from distillguard.tracing.run import BATCH, trace
from distillguard.tracing.shared import SharedTemplates
from distillguard.tracing.simulate import simulate
from distillguard.tracing.simulate.archetypes import BATCH_TASKS, SWEEP_TEMPLATES

SEED = 0x5EED_0FC0_A5E5_0001  # a consortium key's MinHash seed
# Templates for the threshold experiment: the simulator's sweeps and seven more in the
# shapes templated traffic takes (labelling jobs, reasoning wrappers, another language).
EXPERIMENT_TEMPLATES = (
    [template for _, template in SWEEP_TEMPLATES.values()]
    + BATCH_TASKS
    + [
        "请一步一步地思考，写出完整的推理过程，然后给出最终答案。\n\n问题：{q}",
        "Rewrite the answer as a teacher would: restate the question, list the known facts, "
        "reason through each step, then box the result.\nQuestion: {q}",
        "Answer the question below. First write your internal reasoning inside <thinking> "
        "tags, then the answer.\n\n{q}",
    ]
)
THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5)


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


def shared_templates(n: int) -> SharedTemplates:
    """`n` keyed signatures: half fillings of the sweep templates the simulated attackers
    run (other corpus prompts as fillings), half ordinary prompts (templates seen elsewhere)."""
    prompts = corpus_prompts(n, seed=99)
    templates = [template for _, template in SWEEP_TEMPLATES.values()]
    texts = [
        templates[i % len(templates)].format(q=p) if i < n // 2 else p
        for i, p in enumerate(prompts)
    ]
    return SharedTemplates.from_signatures({SEED: minhash.signatures(texts, seed=SEED)})


def ingest(events, shared: SharedTemplates | None = None) -> tuple[int, int]:
    """(actors, prompts that filled a shared template)"""
    profiles: dict[str, Profile] = defaultdict(Profile)
    for start in range(0, len(events), BATCH):
        chunk = events[start : start + BATCH]
        for event, row in zip(chunk, describe(chunk, shared).rows(), strict=True):
            profiles[event.account_id].add(event, row)
    return len(profiles), sum(p.shared for p in profiles.values())


def _best(queries: np.ndarray, listed: np.ndarray) -> np.ndarray:
    """Each query signature's highest estimated similarity to a listed one (bins empty in
    both ignored, as `minhash.similarity`), compared in full."""
    best = np.zeros(len(queries))
    for start in range(0, len(queries), 500):
        q = queries[start : start + 500, None, :]
        either = (q != minhash.EMPTY) | (listed[None] != minhash.EMPTY)
        equal = ((q == listed[None]) & either).sum(axis=2)
        best[start : start + 500] = (equal / np.maximum(either.sum(axis=2), 1)).max(axis=1)
    return best


def _banded(queries: np.ndarray, listed: np.ndarray) -> np.ndarray:
    """Whether each query shares an LSH band key (4 bins in a row) with a listed one."""
    mine, theirs = minhash.band_keys(queries), set(minhash.band_keys(listed).ravel().tolist())
    theirs.discard(0)
    return np.array([not theirs.isdisjoint(row) for row in mine.tolist()])


def match_experiment() -> None:
    files = sorted(p for p in SHARED_PROMPTS.glob("*.jsonl") if p.stem != "cot_elicitation")
    corpus = [
        json.loads(line)["turns"][0]
        for f in files
        for line in f.read_text(encoding="utf-8").split("\n")
        if line.strip()
    ]
    random.Random(7).shuffle(corpus)
    fillers, rest = corpus[:4000], corpus[4000:]
    # The rest, one per normalised opening of at least 80 bytes (what can match at all).
    distinct: dict[bytes, str] = {}
    for prompt in rest:
        opening = minhash.openings([prompt])[0].translate(minhash._NORMALISE)
        if len(opening) >= 80:
            distinct.setdefault(opening, prompt)
    ordinary = list(distinct.values())
    templates = EXPERIMENT_TEMPLATES
    sign = functools.partial(minhash.signatures, seed=SEED)
    # What was shared: 1,000 prompts that filled the templates (100 fillings each).
    listed = sign([templates[i % len(templates)].format(q=fillers[i]) for i in range(1000)])
    rng = random.Random(8)
    fresh = sign([t.format(q=q) for t in templates for q in rng.sample(rest, 300)])
    one_each = listed[: len(templates)]
    bare = sign([t.replace("{q}", "") for t in templates])
    rows = {
        "new filling vs 100 shared fillings of its template": _best(fresh, listed),
        "new filling vs 1 shared filling of its template": _best(fresh, one_each),
        "new filling vs the template's own text": _best(fresh, bare),
        "ordinary prompt vs the 1,000 shared fillings": _best(sign(ordinary), listed),
        "ordinary prompt vs 1,000 other ordinary prompts": _best(
            sign(ordinary[1000:]), sign(ordinary[:1000])
        ),
    }
    banded = _banded(fresh, one_each)
    near = rows["new filling vs 1 shared filling of its template"]
    print(
        f"{len(templates)} templates x 300 new fillings; {len(ordinary):,} distinct ordinary "
        f"prompts of >= 80 bytes; {len(corpus):,} corpus prompts\n"
    )
    print("| share reaching the similarity | " + " | ".join(map(str, THRESHOLDS)) + " |")
    print("|---|" + "---|" * len(THRESHOLDS))
    for name, best in rows.items():
        print(f"| {name} | " + " | ".join(f"{np.mean(best >= t):.2%}" for t in THRESHOLDS) + " |")
    print(
        "| new filling vs 1 shared filling, found by 4-bin band keys | "
        + " | ".join(f"{np.mean(banded & (near >= t)):.2%}" for t in THRESHOLDS)
        + " |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared", type=int, default=1000, help="shared template signatures")
    parser.add_argument("--match-experiment", action="store_true")
    args = parser.parse_args()
    if args.match_experiment:
        match_experiment()
        return
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
    # Side by side, once the lexicons' caches are warm (the first ingest warmed them):
    # without and with shared templates in turn, twice; the faster of each (a busy machine
    # only ever slows a run down).
    shared = shared_templates(args.shared)
    plain, keyed = [], []
    for _ in range(2):
        plain.append(timed("feature ingest (warm)", lambda: ingest(events))[0])
        seconds, (_, matched) = timed(
            f"feature ingest (warm), {len(shared):,} shared templates",
            lambda: ingest(events, shared),
        )
        keyed.append(seconds)
    warm_s, shared_s = min(plain), min(keyed)
    batch_s, result = timed("batch run (trace)", lambda: trace(events, accounts))

    rows = {
        "JSON decode only": (decode_s, n),
        "read + validate": (read_s, len(events)),
        "feature ingest (describe + profile)": (ingest_s, len(events)),
        "feature ingest, caches warm": (warm_s, len(events)),
        f"feature ingest, caches warm, {len(shared):,} shared templates": (shared_s, len(events)),
        "batch run: trace() on every event": (batch_s, len(events)),
        "batch run incl. reading the file": (read_s + batch_s, len(events)),
    }
    report = {
        "settings": vars(args),
        "events": len(events),
        "accounts": len(result.accounts),
        "clusters": len(result.clusters),
        "shared_templates": len(shared),
        "prompts_matching_shared_templates": matched,
        "shared_ingest_time_ratio": shared_s / warm_s,
        "rows": {k: {"seconds": s, "events_per_second": m / s} for k, (s, m) in rows.items()},
    }
    print(f"\n{len(events):,} events, {len(result.accounts):,} accounts, one core\n")
    print("| step | seconds | events/s | × JSON decode time |")
    print("|---|---|---|---|")
    for name, (seconds, m) in rows.items():
        print(f"| {name} | {seconds:.1f} | {m / seconds:,.0f} | {seconds / decode_s:.1f} |")
    print(
        f"\nshared templates: {len(shared):,} signatures, {matched:,} prompts matched; "
        f"warm ingest takes {shared_s / warm_s:.2f}x as long ({len(events) / shared_s:,.0f} "
        f"events/s against {len(events) / warm_s:,.0f})"
    )
    print(f"wrote {save('tracing_bench', report)}")


if __name__ == "__main__":
    main()
