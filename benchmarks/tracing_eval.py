"""Tracing quality: the default scenario and three held-out ones, beside two baselines.

    python benchmarks/tracing_eval.py [--scale 1.0] [--seed 1]

For each scenario the simulator writes a week of labelled traffic (seeded), `trace()`
scores it, and `evaluate()` compares with the labels and with the volume and PRADA
baselines on the same events. Targets on `default`: ROC-AUC >= 0.99,
TPR >= 95 % at 1 % FPR, heavy-benign FPR <= 0.5 %, hydra linkage >= 90 %, median
time-to-flag <= 300 requests for bulk attackers. `hydra-swarm`, `hidden`,
`heavy-benign` and `evasive` were not used to set any anchor; `evasive` holds attackers
built to stay under the documented anchors. Reports land in benchmarks/out/tracing/.

    python benchmarks/tracing_eval.py --independent [--scale 1.0] [--seeds 1 2]

The same question on traffic the project did not write: every scenario of
`../shared/scenarios/` (its own generator), traced by `distillguard trace run` exactly as
a user runs it and scored by that set's own `score.py`. Each score sheet lands in
benchmarks/out/tracing/independent/<scenario>-<seed>.txt, the headlines in
benchmarks/out/tracing_independent.json. With two seeds or more, each week is judged again
with the flag threshold calibrated (`trace calibrate --fpr`, default 1 %) on the benign
accounts of the other seed's week: <scenario>-<seed>-calibrated.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import OUT, ROOT, SHARED_PROMPTS, save
from distillguard.tracing.evaluate import evaluate, read_labels, write_report
from distillguard.tracing.records import read_accounts, read_events
from distillguard.tracing.run import trace
from distillguard.tracing.simulate import SCENARIOS, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIOS))
    parser.add_argument("--independent", action="store_true", help="../shared/scenarios instead")
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2], help="with --independent")
    parser.add_argument(
        "--fpr", type=float, default=0.01, help="with --independent: the calibrated flag rate"
    )
    args = parser.parse_args()
    if args.independent:
        independent(args.scale, args.seeds, args.fpr)
        return
    results = {}
    for scenario in args.scenarios:
        with tempfile.TemporaryDirectory(prefix="dg-tracing-") as tmp:
            directory = Path(tmp)
            counts = simulate(scenario, directory, SHARED_PROMPTS, seed=args.seed, scale=args.scale)
            events = list(read_events(directory / "events.jsonl"))
            start = time.perf_counter()
            result = trace(events, read_accounts(directory / "accounts.jsonl"))
            seconds = time.perf_counter() - start
            metrics = evaluate(result, events, read_labels(directory / "labels.jsonl"))
        write_report(metrics, OUT / "tracing" / scenario)
        metrics = {k: v for k, v in metrics.items() if not k.startswith("_")}
        results[scenario] = {"simulated": counts, "trace_seconds": seconds, **metrics}
        _print(scenario, results[scenario])
    print(f"wrote {save('tracing_eval', {'settings': vars(args), 'scenarios': results})}")


INDEPENDENT = ROOT.parent / "shared" / "scenarios"
INDEPENDENT_SCENARIOS = ("mixed", "heavy-legit", "hydra", "stealth", "pivot")


def independent(scale: float, seeds: list[int], fpr: float) -> None:
    """Generate, trace (the CLI, as a user runs it) and score every independent scenario;
    then again with the flag threshold calibrated (`trace calibrate`) on the benign
    accounts of the scenario's other seed: a past week's population the provider vouches
    for, never the week being judged."""
    if not (INDEPENDENT / "generate.py").exists():
        raise SystemExit(f"no {INDEPENDENT}/generate.py (expected ../shared beside the repo)")
    sheets = OUT / "tracing" / "independent"
    sheets.mkdir(parents=True, exist_ok=True)
    headlines = {}
    for scenario in INDEPENDENT_SCENARIOS:
        with tempfile.TemporaryDirectory(prefix="dg-independent-") as tmp:
            weeks = {seed: Path(tmp) / str(seed) for seed in seeds}
            for seed, week in weeks.items():
                generate = [sys.executable, str(INDEPENDENT / "generate.py"), "--out", str(week)]
                options = ["--scenario", scenario, "--seed", str(seed), "--scale", str(scale)]
                subprocess.run([*generate, *options], check=True, capture_output=True)
                name = f"{scenario}-{seed}"
                headlines[name] = _judge(week, "result.json", sheets / f"{name}.txt")
            for seed, week in weeks.items():
                others = [s for s in seeds if s != seed]
                if not others:
                    continue
                past = weeks[others[0]]
                thresholds = _calibrate(past, fpr)
                name = f"{scenario}-{seed}"
                headlines[name]["calibrated"] = {
                    "on_seed": others[0],
                    "fpr": fpr,
                    "thresholds": thresholds,
                    **_judge(
                        week, "calibrated.json", sheets / f"{name}-calibrated.txt", thresholds
                    ),
                }
    settings = {"scale": scale, "seeds": seeds, "calibrated_fpr": fpr}
    print(f"wrote {save('tracing_independent', {'settings': settings, 'runs': headlines})}")


def _judge(week: Path, result_name: str, sheet_path: Path, thresholds: dict | None = None) -> dict:
    """`trace run` on one week (with `thresholds` as tracing settings), scored by score.py."""
    result = week / result_name
    cli = str(Path(sys.executable).parent / "distillguard")
    env = {**os.environ}
    for setting, value in (thresholds or {}).items():
        env[f"DISTILLGUARD_TRACING__{setting.upper()}"] = str(value)
    start = time.perf_counter()
    traced = [cli, "trace", "run", "--events", str(week / "events.jsonl")]
    traced += ["--accounts", str(week / "accounts.jsonl"), "--json", str(result)]
    traced += ["--store", f"sqlite:///{week / (result_name + '.db')}"]
    subprocess.run(traced, check=True, capture_output=True, env=env)
    seconds = time.perf_counter() - start
    scorer = [
        sys.executable,
        str(INDEPENDENT / "score.py"),
        str(week / "labels.jsonl"),
        str(result),
    ]
    sheet = subprocess.run(scorer, check=True, capture_output=True, text=True).stdout
    sheet_path.write_text(sheet)
    headline = sheet.strip().splitlines()[-1]
    unflagged = _undetected_yield(week, result)
    print(f"{sheet_path.stem} ({seconds:.0f} s): {headline}", flush=True)
    for archetype, row in unflagged.items():
        print(f"  under the threshold: {archetype} {row}", flush=True)
    return {"headline": headline, "trace_seconds": seconds, "undetected_yield": unflagged}


def _calibrate(week: Path, fpr: float) -> dict[str, float]:
    """`trace calibrate` on a traced week's benign accounts: the thresholds it prints."""
    vouched = week / "vouched.txt"
    with (week / "labels.jsonl").open() as labels:
        rows = [json.loads(line) for line in labels]
    vouched.write_text("".join(f"{r['account_id']}\n" for r in rows if r["label"] == "benign"))
    cli = str(Path(sys.executable).parent / "distillguard")
    command = [cli, "trace", "calibrate", "--result", str(week / "result.json")]
    command += ["--reference", str(vouched), "--fpr", str(fpr), "--watch-fpr", str(5 * fpr)]
    printed = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    settings = printed.split("[tracing]\n", 1)[1].splitlines()
    return {name: float(value) for name, value in (line.split(" = ") for line in settings)}


def _undetected_yield(week: Path, result: Path) -> dict[str, dict[str, int]]:
    """Per attacker archetype with accounts left unflagged: how many, and the median answer
    tokens such an account took away in the week (its admitted requests' completion
    tokens, the cover traffic of a mixed account included): what an undetected campaign
    got for its trouble."""
    labels = {}
    for line in (week / "labels.jsonl").open():
        row = json.loads(line)
        if row["label"] == "attacker":
            labels[row["account_id"]] = row["archetype"]
    flagged = {a["account_id"] for a in json.loads(result.read_text())["accounts"] if a["flagged"]}
    tokens: dict[str, int] = dict.fromkeys(labels.keys() - flagged, 0)
    with (week / "events.jsonl").open() as events:
        for line in events:
            event = json.loads(line)
            if event["account_id"] in tokens and event.get("status") == 200:
                tokens[event["account_id"]] += event.get("completion_tokens") or 0
    by_archetype: dict[str, list[int]] = {}
    for account, taken in tokens.items():
        by_archetype.setdefault(labels[account], []).append(taken)
    return {
        archetype: {"accounts": len(taken), "median_answer_tokens": int(statistics.median(taken))}
        for archetype, taken in sorted(by_archetype.items())
    }


def _print(scenario: str, r: dict) -> None:
    ours = r["account_level"]["distillguard"]
    volume, prada = r["account_level"]["baseline_volume"], r["account_level"]["baseline_prada"]
    heavy, bulk, hydra = r["heavy_benign"], r["time_to_flag"]["bulk_attackers"], r["hydra_linkage"]
    print(
        f"\n## {scenario}: {r['simulated']['events']:,} events, {r['accounts']:,} accounts "
        f"({r['attackers']:,} attackers), traced in {r['trace_seconds']:.0f} s\n"
    )
    print("| method | ROC-AUC | PR-AUC | TPR @1% FPR | TPR @0.1% FPR |")
    print("|---|---|---|---|---|")
    for name, row in (("distillguard", ours), ("volume", volume), ("PRADA", prada)):
        print(
            f"| {name} | {row['roc_auc']:.4f} | {row['pr_auc']:.4f} | "
            f"{row['tpr_at_1pct_fpr']:.1%} | {row['tpr_at_0.1pct_fpr']:.1%} |"
        )
    when = (
        f"{bulk['flagged']} of {bulk['attackers']} bulk attackers flagged after a median of "
        f"{bulk['median_requests']:g} requests (p90 {bulk['p90_requests']})"
        if bulk["flagged"]
        else f"no bulk attacker flagged (of {bulk['attackers']})"
    )
    print(
        f"\nheavy benign flagged {heavy['flagged']} / {heavy['accounts']}; {when}; "
        f"hydra linked {hydra['linked']} / {hydra['hydra_accounts']}; "
        f"clusters: {r['clusters']}"
    )
    for name, row in r["archetypes"].items():
        print(f"  {name:24s} {row['flagged']:4d} / {row['accounts']:<5d} flagged")


if __name__ == "__main__":
    main()
