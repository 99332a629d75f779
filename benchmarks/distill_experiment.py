"""The distillation experiment: students trained on harvested answers, traced back to us.

    python benchmarks/distill_experiment.py [--scale 1] [--cohorts 8] [--mixes 100,25,5]
        [--scratch 3] [--null-keys 100] [--out benchmarks/out/distill_experiment.json]

1. **Teacher**: `distillguard serve --engine bundled` (the bundled SmolLM2), one harvesting
   account per cohort, each asking `8 x scale` prompts of the shared corpus through the
   openai SDK; every answer is watermarked with its account's cohort sub-key and logged.
   The investigator's corpus is the gateway's own `distillguard events export`.
2. **Students**, each trained on what one account harvested (its cohort's answers), loss
   on the answer tokens only:
   * *fine-tuned*: the bundled model fine-tuned on a mix in which x % of the answer tokens
     are that account's watermarked answers and the rest unwatermarked answers of the same
     teacher to other prompts, for each x in `--mixes`;
   * *scratch*: a small transformer (2 layers, 256 wide, our tokenizer) trained from
     random weights on the account's answers, `--scratch` of them on different cohorts;
   * *controls*: one of each kind trained on unwatermarked teacher answers only.
3. **Test**: each student reads the whole event export (open-weight mode,
   `distillguard.suspect`): every cohort's key on its own answers, Holm-corrected, beside
   the control keys. A trial is right when exactly the student's cohort is named (none
   for a control). **Null trials**: each reading is also judged under `--null-keys`
   master keys that never marked anything; at alpha 0.01 at most 1 % may name a cohort.

Targets: x = 100 -> p < 1e-10; x = 5 -> p < 1e-6; the right cohort in >= 95 %
of trials; null trials significant in <= 1 %. CPU by default; `--scale` multiplies the
data (and the time) for a bigger machine.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import math
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from common import ROOT, corpus_prompts, save

sys.path.insert(0, str(ROOT))  # the tests' gateway launcher
from tests.gateway_stack import gateway

from distillguard.config import load_settings
from distillguard.demo.student import FINE_TUNE, SCRATCH, examples, new_model, train
from distillguard.engine.transformers_engine import TransformersEngine
from distillguard.gateway.backends.bundled import MODEL_NAME
from distillguard.policy import MAX_LIMIT, Limits
from distillguard.store import AccountStore, open_engine
from distillguard.suspect.corpus import read_corpus
from distillguard.suspect.reading import ReadItem
from distillguard.suspect.run import read
from distillguard.suspect.verdict import judge
from distillguard.watermark import WatermarkKey
from distillguard.watermark.cohorts import Cohorts
from distillguard.watermark.core import WatermarkConfig

ALPHA = 0.01
MAX_PROMPT_CHARS = 300
# The harvest measures the watermark, not the rate limiter: never refuse it.
LIMITS = Limits(rpm=1_000_000, tpm=1_000_000_000, tpd=MAX_LIMIT["tpd"], concurrency=1_000)


@dataclass
class Student:
    name: str
    kind: str  # "fine-tuned" or "scratch"
    cohort: int | None  # whose answers it learned (None: a control)
    watermarked_share: float  # of its answer tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the answers")
    parser.add_argument("--cohorts", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--mixes", default="100,25,5", help="watermarked %% of fine-tunes")
    parser.add_argument("--scratch", type=int, default=3, help="students from scratch")
    parser.add_argument("--null-keys", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="result JSON (default: benchmarks/out)")
    args = parser.parse_args()
    mixes = [float(x) for x in args.mixes.split(",") if x]
    if not all(0 < x <= 100 for x in mixes) or args.cohorts < 2:
        raise SystemExit("--mixes are percentages in (0, 100]; --cohorts must be at least 2")
    per_account = max(1, round(8 * args.scale))
    started = time.perf_counter()

    settings = load_settings()
    engine = TransformersEngine.bundled(settings.cache_dir)
    # Short prompts keep a CPU run short; the answers are what the students learn.
    prompts = [p for p in corpus_prompts(12_000, seed=args.seed) if len(p) <= MAX_PROMPT_CHARS]
    wanted = args.cohorts * per_account
    if len(prompts) < wanted + 1000:
        raise SystemExit(f"--scale {args.scale} needs more prompts than the corpus has")
    harvest_prompts, spare = prompts[:wanted], prompts[wanted:]
    with tempfile.TemporaryDirectory(prefix="distill-") as tmp:
        workdir = Path(tmp)
        clock = time.perf_counter()
        key, harvested, corpus_file = harvest(
            workdir, args.cohorts, harvest_prompts, per_account, args.max_tokens, args.seed
        )
        harvest_s = time.perf_counter() - clock
        corpus = read_corpus(corpus_file)
        config = WatermarkConfig.from_params(key.params)
        by_cohort = {c: examples(engine, pairs) for c, pairs in harvested.items()}

        plan = plan_students(mixes, args.scratch, args.cohorts, args.seed)
        need = max(
            [unwatermarked_tokens(by_cohort[s.cohort], s.watermarked_share) for s in plan]
            + [answer_tokens(by_cohort[0])]  # the controls' own data
        )
        clock = time.perf_counter()
        plain = plain_answers(engine, spare, need, args.max_tokens, settings.generation)
        plain_s = time.perf_counter() - clock
        print(
            f"harvested {len(corpus.answers)} answers in {harvest_s:.0f} s; "
            f"{answer_tokens(plain):,} unwatermarked tokens in "
            f"{plain_s:.0f} s",
            flush=True,
        )

        controls = [
            Student("fine-tuned control", "fine-tuned", None, 0.0),
            Student("scratch control", "scratch", None, 0.0),
        ]
        results = []
        for student in plan + controls:
            if student.cohort is None:
                own = []
                data = take_tokens(plain, answer_tokens(by_cohort[0]))
            else:
                own = by_cohort[student.cohort]
                data = own + take_tokens(
                    plain, unwatermarked_tokens(own, student.watermarked_share)
                )
            results.append(
                run_student(
                    student,
                    data,
                    answer_tokens(own),
                    engine,
                    corpus,
                    key,
                    config,
                    args.cohorts,
                    args.null_keys,
                    settings.cache_dir,
                    args.seed,
                )
            )
            print(_row(results[-1]), flush=True)
            gc.collect()

    report = summarise(results, args, per_account, harvest_s, plain_s, started)
    print(markdown(report))
    print(f"wrote {save('distill_experiment', report, args.out)}")


# -- the teacher ------------------------------------------------------------------------


def harvest(
    workdir: Path,
    cohorts: int,
    prompts: list[str],
    per_account: int,
    max_tokens: int,
    seed: int,
) -> tuple[WatermarkKey, dict[int, list[tuple[str, str]]], Path]:
    """One account per cohort asks its share of `prompts` through the real gateway; returns
    the key, what each cohort's account received, and the gateway's event export. The key
    and the sampling follow `seed`, so a run can be repeated."""
    import openai

    secret = hashlib.sha256(f"distill-experiment/{seed}".encode()).digest()
    key = WatermarkKey(secret=secret, key_id=f"wk_distillexperiment{seed}")
    key.save(workdir / "key.json")
    store = f"sqlite:///{workdir / 'store.db'}"
    accounts = AccountStore(open_engine(store))
    assigner = Cohorts(key, cohorts)
    owners: dict[int, str] = {}
    candidate = 0
    while len(owners) < cohorts:  # an account in every cohort (the assignment is keyed)
        account = f"harvester-{candidate:04d}"
        owners.setdefault(assigner.of(account), account)
        candidate += 1
    api_keys = {c: accounts.issue_key(a, limits=LIMITS).api_key for c, a in owners.items()}
    for account in owners.values():
        accounts.set_limits("account", account, LIMITS)
    served = ("--engine", "bundled", "--watermark-key", str(workdir / "key.json"))
    env = {
        "DISTILLGUARD_GATEWAY__COHORTS": str(cohorts),
        "DISTILLGUARD_TRACING__ONLINE": "false",  # the watermark is measured, not the tracer
        "HF_HUB_OFFLINE": "1",
    }
    with gateway(None, store, *served, env=env) as stack:

        def ask(cohort: int) -> list[tuple[str, str]]:
            client = openai.OpenAI(base_url=stack.url, api_key=api_keys[cohort], max_retries=2)
            mine = prompts[cohort * per_account : (cohort + 1) * per_account]
            got = []
            for i, prompt in enumerate(mine):
                reply = client.chat.completions.create(
                    model=MODEL_NAME,
                    messages=[{"role": "user", "content": prompt}],
                    max_tokens=max_tokens,
                    seed=seed * 1_000_003 + cohort * 10_007 + i,
                )
                got.append((prompt, reply.choices[0].message.content or ""))
            return got

        with ThreadPoolExecutor(4) as pool:
            harvested = dict(zip(range(cohorts), pool.map(ask, range(cohorts)), strict=True))
    export = workdir / "events.jsonl"
    exe = str(Path(sys.executable).parent / "distillguard")
    with export.open("w") as out:
        subprocess.run([exe, "events", "export", "--store", store], stdout=out, check=True)
    return key, harvested, export


def plain_answers(
    engine: TransformersEngine, prompts: list[str], tokens: int, max_tokens: int, generation
) -> list[ReadItem]:
    """Unwatermarked answers of the same teacher (same sampling) until `tokens` answer
    tokens: the rest of a mix, and the controls' data."""
    found: list[ReadItem] = []
    count, start = 0, 0
    while count < tokens:
        batch = prompts[start : start + 16]
        start += 16
        for done in engine.generate(
            batch,
            max_new_tokens=max_tokens,
            temperature=generation.temperature,
            top_p=generation.top_p,
            seed=start,
        ):
            found.append(ReadItem(done.prompt_ids, done.completion_ids))
            count += len(done.completion_ids)
    return found


# -- the students -----------------------------------------------------------------------


def plan_students(mixes: list[float], scratch: int, cohorts: int, seed: int) -> list[Student]:
    """Watermarked students on different cohorts where there are enough of them."""
    order = list(range(cohorts))
    random.Random(seed).shuffle(order)
    plan = [
        Student(f"fine-tuned, {x:g} % watermarked", "fine-tuned", 0, x / 100) for x in mixes
    ] + [Student(f"scratch #{i + 1}", "scratch", 0, 1.0) for i in range(scratch)]
    for i, student in enumerate(plan):
        student.cohort = order[i % cohorts]
    return plan


def answer_tokens(items: Sequence[ReadItem]) -> int:
    return sum(len(i.answer_ids) for i in items)


def unwatermarked_tokens(own: list[ReadItem], share: float) -> int:
    """Unwatermarked answer tokens to add so that `own` (share > 0) is `share` of the mix."""
    return math.ceil(answer_tokens(own) * (1 - share) / share)


def take_tokens(items: list[ReadItem], tokens: int) -> list[ReadItem]:
    taken, count = [], 0
    for item in items:
        if count >= tokens:
            break
        taken.append(item)
        count += len(item.answer_ids)
    if count < tokens:
        raise SystemExit(f"not enough unwatermarked answers ({count} < {tokens} tokens)")
    return taken


def run_student(
    student: Student,
    data: list[ReadItem],
    watermarked_tokens: int,
    engine: TransformersEngine,
    corpus,
    key: WatermarkKey,
    config: WatermarkConfig,
    cohorts: int,
    null_keys: int,
    cache_dir: Path,
    seed: int,
) -> dict:
    recipe = FINE_TUNE if student.kind == "fine-tuned" else SCRATCH
    model = new_model(student.kind, engine, cache_dir, seed)
    clock = time.perf_counter()
    train(model, data, recipe, seed)
    train_s = time.perf_counter() - clock
    clock = time.perf_counter()
    reading = read(model, corpus, engine, config, cohorts=cohorts, budget=10**9)
    read_s = time.perf_counter() - clock
    verdict = judge(key, reading.windows, mode="reading", cohorts=cohorts, alpha=ALPHA)
    document = verdict.document()
    named = document["named_cohorts"]
    # Null trials: master keys that never marked anything judge the same reading.
    nulls = [
        judge(key.derive(f"null-{i}"), reading.windows, mode="reading", cohorts=cohorts).learned
        for i in range(null_keys)
    ]
    return {
        "student": student.name,
        "kind": student.kind,
        "cohort": student.cohort,
        "watermarked_percent": round(100 * student.watermarked_share, 1),
        "train_answers": len(data),
        "train_answer_tokens": answer_tokens(data),
        "watermarked_answer_tokens": watermarked_tokens,
        "epochs": recipe.epochs_for(len(data)),
        "train_seconds": round(train_s, 1),
        "read_seconds": round(read_s, 1),
        "mode": document["mode"],
        "scored": document["scored"],
        "green_fraction": document["green_fraction"],
        "p_value": document["p_value"],
        "log10_p_value": document["log10_p_value"],
        "verdict": document["verdict"],
        "named_cohorts": named,
        "right": named == ([student.cohort] if student.cohort is not None else []),
        "control": document["control"],
        "null_trials": null_keys,
        "null_significant": sum(nulls),
    }


# -- the report -------------------------------------------------------------------------


def summarise(results, args, per_account, harvest_s, plain_s, started) -> dict:
    trials = len(results)
    right = sum(r["right"] for r in results)
    nulls = sum(r["null_trials"] for r in results) + trials  # + each verdict's own control
    false = sum(r["null_significant"] for r in results) + sum(
        r["control"]["significant"] for r in results
    )
    by_mix = {r["watermarked_percent"]: r for r in results if r["kind"] == "fine-tuned"}
    targets = {
        "x=100: p < 1e-10": 100.0 in by_mix and by_mix[100.0]["log10_p_value"] < -10,
        "x=5: p < 1e-6": 5.0 in by_mix and by_mix[5.0]["log10_p_value"] < -6,
        "right cohort in >= 95 % of trials": right >= 0.95 * trials,
        "null significant in <= 1 %": false <= 0.01 * nulls,
    }
    return {
        "cohorts": args.cohorts,
        "answers_per_account": per_account,
        "max_tokens": args.max_tokens,
        "harvest_seconds": round(harvest_s, 1),
        "unwatermarked_seconds": round(plain_s, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "students": results,
        "attribution": {"right": right, "trials": trials},
        "null": {"significant": false, "trials": nulls},
        "targets": targets,
        "command": "python " + " ".join(["benchmarks/distill_experiment.py", *sys.argv[1:]]),
    }


def _row(r: dict) -> str:
    control = f"{r['control']['p_value']:.2g}" + (
        " (significant)" if r["control"]["significant"] else ""
    )
    cohort = "-" if r["cohort"] is None else str(r["cohort"])
    return (
        f"| {r['student']} | {cohort} | {r['train_answer_tokens']:,} | {r['train_seconds']:.0f} | "
        f"{r['read_seconds']:.0f} | {r['scored']:,} | {r['green_fraction']:.3f} | "
        f"1e{r['log10_p_value']:.1f} | {r['named_cohorts'] or 'none'} | {control} | "
        f"{r['null_significant']}/{r['null_trials']} |"
    )


def markdown(report: dict) -> str:
    head = (
        "| student | cohort | trained on (answer tokens) | train s | read s | scored | green |"
        " p | named | control p | null trials significant |\n|" + "---|" * 11
    )
    lines = [head, *(_row(r) for r in report["students"])]
    a, n = report["attribution"], report["null"]
    lines.append(
        f"\nRight cohort: {a['right']}/{a['trials']} trials; null trials significant: "
        f"{n['significant']}/{n['trials']}. Harvest {report['harvest_seconds']:.0f} s, "
        f"whole run {report['total_seconds'] / 60:.0f} min."
    )
    lines += [f"- {name}: {'met' if ok else 'NOT met'}" for name, ok in report["targets"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
