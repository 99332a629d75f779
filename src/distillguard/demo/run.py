"""The whole defence in one run: two providers, a hub, a day of traffic, a student.

1. Provider A runs the gateway with the bundled model, watermarked per cohort, beside a
   synthetic backend for the bulk of the traffic; provider B runs a gateway of its own;
   both are members of one hub.
2. A harvester's first answers come from the real model; then a simulated day of A's
   traffic (casual and heavy legitimate users, harvesters, a hydra) replays through A's
   gateway with limits on, on a compressed clock.
3. A's online tracer raises the harvesters' tiers while they run; the gateway throttles or
   blocks them. The heavy legitimate users keep being served.
4. A's batch trace links the hydra into one operation; A publishes to the hub; B pulls,
   and the hydra's accounts are flagged as they sign up at B.
5. A student is fine-tuned on the harvester's answers, a control on unwatermarked ones;
   the suspect test names the harvester's cohort for the student and nothing for the
   control.

Everything lands in `out`: the stores (open A's in the console), the logs, the report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from distillguard.config import TracingSettings, load_settings
from distillguard.demo.cast import Cast, cast
from distillguard.demo.providers import COHORTS, TIERS, Providers
from distillguard.demo.replay import Replayed, replay, timestamp
from distillguard.errors import DistillguardError
from distillguard.exchange.client import HubClient
from distillguard.exchange.publish import publish_run
from distillguard.exchange.watchlist import Watchlist
from distillguard.gateway.backends.bundled import MODEL_NAME
from distillguard.store import AccountStore, EventStore, ScoreStore, SuspectStore, open_engine
from distillguard.tracing.records import load_inputs
from distillguard.tracing.run import trace
from distillguard.tracing.tiers import earned_tiers

MAX_PROMPT_CHARS = 300  # the real model answers short prompts: a CPU run stays short
# What a run writes into its folder, and removes there before it starts again.
WRITES = ("provider-a.db", "provider-b.db", "hub.db", "watermark-key.json", "consortium.key")
WRITES += ("admin-token",)
WRITES += ("provider-a-accounts.jsonl", "answers.jsonl", "summary.json", "report.html")


class Screen(Protocol):
    """Where the demo reports as it goes (the CLI's progress display)."""

    def say(self, line: str) -> None: ...

    def phase(self, title: str, total: int | None = None) -> Callable[[int], None]: ...


@dataclass
class Size:
    """How much of everything: `--quick` for CI, the full run for people."""

    real_answers: int  # the harvester's answers from the real model
    answer_tokens: int
    replay_seconds: float  # the simulated traffic's span, compressed into this
    signups_at_b: int  # hydra accounts that sign up at provider B


QUICK = Size(real_answers=8, answer_tokens=48, replay_seconds=40, signups_at_b=20)
FULL = Size(real_answers=16, answer_tokens=64, replay_seconds=150, signups_at_b=60)


@dataclass
class Outcome:
    claim: str
    met: bool
    measured: str


@dataclass
class Demo:
    out: Path
    quick: bool
    seed: int
    cast: Cast
    seconds: dict[str, float] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    accounts: list[dict[str, Any]] = field(default_factory=list)  # one row per account shown
    students: list[dict[str, Any]] = field(default_factory=list)
    signups: list[dict[str, Any]] = field(default_factory=list)  # at provider B
    published: dict[str, int] = field(default_factory=dict)
    operations: list[dict[str, Any]] = field(default_factory=list)
    student_account: str | None = None
    student_cohort: int | None = None
    speedup: float = 1.0  # simulated seconds per wall second in the replay
    replay_late: float = 0.0  # how far behind its schedule the replay's last request went

    @property
    def ok(self) -> bool:
        return all(o.met for o in self.outcomes)

    def summary(self) -> dict[str, Any]:
        return {
            "quick": self.quick,
            "seed": self.seed,
            "ok": self.ok,
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
            "speedup": round(self.speedup),
            "replay_late_seconds": round(self.replay_late, 1),
            "outcomes": [vars(o) for o in self.outcomes],
            "accounts": self.accounts,
            "students": self.students,
            "signups_at_b": self.signups,
            "published": self.published,
            "operations": self.operations,
            "student_account": self.student_account,
            "student_cohort": self.student_cohort,
        }


def run(out: Path, *, quick: bool, seed: int, screen: Screen) -> Demo:
    """Run the demo into `out` (created; a previous demo's stores there are replaced)."""
    size = QUICK if quick else FULL
    _prepare(out)
    started = time.monotonic()
    clock = time.monotonic()
    people = cast(quick, seed)
    demo = Demo(out, quick, seed, people)
    screen.say(
        f"simulated {people.days} day(s) of provider A's traffic: {len(people.events):,} "
        f"requests from {len(people.accounts):,} accounts"
    )
    world = Providers.create(out, people)
    demo.seconds["set-up"] = time.monotonic() - clock
    with ExitStack() as servers:
        clock = time.monotonic()
        screen.phase("starting the hub, two gateways and the synthetic backend")
        urls = world.start(servers)
        demo.seconds["start"] = time.monotonic() - clock

        clock = time.monotonic()
        harvester = people.members("harvester")[0]
        demo.student_account, demo.student_cohort = harvester, world.cohorts.of(harvester)
        harvested = _harvest(world, urls["a"], harvester, size, screen)
        demo.seconds["real answers"] = time.monotonic() - clock

        clock = time.monotonic()
        demo.speedup = speedup = _span(people) / size.replay_seconds
        advance = screen.phase(
            f"replaying the day through provider A, {speedup:,.0f}x faster", len(people.events)
        )
        replayed = replay(urls["a"], world.api_keys, people.events, speedup, advance)
        _settled(world, len(harvested) + len(people.events))
        demo.seconds["replay"] = time.monotonic() - clock
        _judge_online(demo, world, replayed)

        clock = time.monotonic()
        screen.phase("A traces the whole day, links operations and publishes to the hub")
        _trace_and_publish(demo, world)
        screen.phase("B pulls from the hub; hydra accounts sign up at B")
        _signups_at_b(demo, world, urls["b"], size)
        demo.seconds["exchange"] = time.monotonic() - clock

    clock = time.monotonic()
    _students(demo, world, harvested, size, screen)
    demo.seconds["students"] = time.monotonic() - clock
    demo.seconds["total"] = time.monotonic() - started
    (out / "summary.json").write_text(json.dumps(demo.summary(), indent=2) + "\n")
    return demo


def _prepare(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in WRITES:
        for path in out.glob(name + "*"):  # SQLite's -wal and -shm beside each store
            path.unlink()
    (out / "logs").mkdir(exist_ok=True)


def _settled(world: Providers, sent: int, within: float = 60.0) -> None:
    """Wait until A's store holds an event for every request sent (the event writer's last
    batches, which the online tracer reads too), and a key refresh more."""
    events = EventStore(open_engine(world.store("a")))
    deadline = time.monotonic() + within
    while events.count() < sent and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(1.0)


def _span(people: Cast) -> float:
    return max(timestamp(people.events[-1]) - timestamp(people.events[0]), 1.0)


def _harvest(
    world: Providers, url: str, harvester: str, size: Size, screen: Screen
) -> list[tuple[str, str]]:
    """The harvester's first prompts, answered by the real model through A's gateway (its
    cohort's watermark in every answer); what it received."""
    asked = (_last_user_text(e) for e in world.people.events if e["account_id"] == harvester)
    prompts = [p for p in asked if p and len(p) <= MAX_PROMPT_CHARS][: size.real_answers]
    advance = screen.phase(
        f"{harvester} harvests {len(prompts)} answers from the real model", len(prompts)
    )
    headers = {"authorization": f"Bearer {world.api_keys[harvester]}"}

    def ask(prompt: str) -> tuple[str, str]:
        body = {
            "model": MODEL_NAME,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": size.answer_tokens,
        }
        reply = httpx.post(f"{url}/chat/completions", json=body, headers=headers, timeout=600)
        if reply.status_code != 200:
            raise DistillguardError(f"the real model's answer failed: {reply.text[:300]}")
        advance(1)
        return prompt, reply.json()["choices"][0]["message"]["content"] or ""

    with ThreadPoolExecutor(8) as pool:  # the bundled engine batches what arrives together
        return list(pool.map(ask, prompts))


def _last_user_text(event: dict[str, Any]) -> str | None:
    users = [m["content"] for m in event.get("messages") or [] if m.get("role") == "user"]
    return users[-1] if users else None


def _judge_online(demo: Demo, world: Providers, replayed: Replayed) -> None:
    people = world.people
    accounts = AccountStore(open_engine(world.store("a")))
    rows = []
    for account_id in people.accounts:
        role = people.role(account_id)
        tier, reason = accounts.account_tier(account_id)
        rows.append(
            {
                "account_id": account_id,
                "role": role,
                "archetype": people.archetype[account_id],
                "requests": replayed.total(account_id),
                "served": replayed.served(account_id),
                "refused": replayed.refused(account_id),
                "tier": tier,
                "reason": reason,
            }
        )
    demo.accounts = rows
    harvesters = [r for r in rows if r["role"] == "harvester"]
    stopped = [r for r in harvesters if r["tier"] in ("throttle", "block") and r["refused"]]
    demo.outcomes.append(
        Outcome(
            "harvesters throttled or blocked by online tracing, while they ran",
            len(stopped) == len(harvesters),
            f"{len(stopped)}/{len(harvesters)} harvesters; "
            + ", ".join(
                f"{r['account_id']} {r['tier']}: {r['refused']:,} of {r['requests']:,} refused"
                for r in harvesters
            ),
        )
    )
    heavy = [r for r in rows if r["role"] == "heavy legitimate"]
    sent = sum(r["requests"] for r in heavy)
    served = sum(r["served"] for r in heavy)
    held = [r for r in heavy if r["tier"] in ("normal", "watch")]
    demo.outcomes.append(
        Outcome(
            "heavy legitimate users served",
            len(held) == len(heavy) and served == sent,
            f"{served:,} of {sent:,} requests served ({served / max(sent, 1):.1%}); "
            f"{len(held)}/{len(heavy)} accounts kept at normal or watch",
        )
    )
    casual = [r for r in rows if r["role"] == "casual"]
    demo.replay_late = replayed.late
    demo.outcomes.append(
        Outcome(
            "casual users untouched",
            all(r["tier"] == "normal" and r["served"] == r["requests"] for r in casual),
            f"{sum(r['tier'] == 'normal' for r in casual)}/{len(casual)} at normal, "
            f"{sum(r['refused'] for r in casual)} requests refused",
        )
    )


def _trace_and_publish(demo: Demo, world: Providers) -> None:
    """What `trace run --apply-tiers` and `exchange publish` do, on A's store."""
    engine = open_engine(world.store("a"))
    accounts_file = world.out / "provider-a-accounts.jsonl"
    loaded, signups = load_inputs(None, accounts_file, engine, lambda report: None)
    result = trace(loaded, signups, flag_at=TIERS["throttle_at"])
    ScoreStore(engine).save_run("demo: provider A's day", result.document(), result.events)
    AccountStore(engine).raise_tiers(
        earned_tiers(result, TracingSettings(**TIERS)), actor="trace run"
    )
    hydra = set(world.people.members("hydra member"))
    demo.operations = [
        {
            "cluster_id": c.cluster_id,
            "accounts": len(c.accounts),
            "hydra_members": len(hydra & set(c.accounts)),
            "score": round(c.score, 3),
            "evidence": c.evidence[:4],
        }
        for c in sorted(result.clusters, key=lambda c: -len(c.accounts))
        if c.flagged and c.operation
    ]
    flagged = {a.account_id for a in result.accounts if a.flagged}
    caught = len(hydra & flagged)
    demo.outcomes.append(
        Outcome(
            "A's batch trace links the hydra's accounts into operations and flags them",
            caught >= 0.9 * len(hydra),
            f"{caught}/{len(hydra)} hydra accounts flagged; operations: "
            + "; ".join(f"{o['cluster_id']} ({o['accounts']} accounts)" for o in demo.operations),
        )
    )
    settings = world.exchange("a", hub=world.hub_url)
    done = publish_run(engine, world.ring, settings, HubClient.from_settings(settings), note=_quiet)
    demo.published = dict(done.publication.counts)


def _quiet(_: str) -> None:
    """publish_run's notes (findings that cannot be shared) are not the demo's story."""


def _signups_at_b(demo: Demo, world: Providers, url: str, size: Size) -> None:
    """B pulls what A published, then hydra accounts (and a few honest ones) sign up at B
    with the identifiers they used at A, and each sends its first request."""
    engine = open_engine(world.store("b"))
    settings = world.exchange("b", hub=world.hub_url)
    Watchlist(engine, world.ring, settings).pull(HubClient.from_settings(settings))
    people = world.people
    hydra = people.members("hydra member")[: size.signups_at_b]
    honest = people.members("casual")[:5]
    admin = httpx.Client(
        base_url=url.removesuffix("/v1"),
        headers={"authorization": f"Bearer {world.admin_token}"},
        timeout=30,
    )
    with admin:
        for account_id in hydra + honest:
            signup = people.accounts[account_id]
            issued = admin.post("/admin/keys", json={"account": f"b-{account_id}"})
            if issued.status_code != 201:
                raise DistillguardError(f"a key at B was refused: {issued.text[:300]}")
            identified = admin.put(
                f"/admin/accounts/b-{account_id}/identifiers",
                json={"email": [signup["email"]], "payment": [signup["payment_fingerprint"]]},
            )
            if identified.status_code != 200:
                raise DistillguardError(f"a signup at B was refused: {identified.text[:300]}")
            first = httpx.post(
                f"{url}/chat/completions",
                json={"model": "dg-large-1", "messages": [{"role": "user", "content": "hi"}]},
                headers={"authorization": f"Bearer {issued.json()['api_key']}"},
                timeout=30,
            )
            demo.signups.append(
                {
                    "account_id": f"b-{account_id}",
                    "role": people.role(account_id),
                    "tier": identified.json()["tier"],
                    "matches": len(identified.json()["matches"]),
                    "first_request": first.status_code,
                }
            )
    flagged = [s for s in demo.signups if s["role"] == "hydra member" and s["tier"] != "normal"]
    clean = [s for s in demo.signups if s["role"] != "hydra member" and s["tier"] == "normal"]
    demo.outcomes.append(
        Outcome(
            "B flags the hydra's accounts at sign-up, from A's published indicators",
            len(flagged) == len(hydra) and len(clean) == len(honest),
            f"{len(flagged)}/{len(hydra)} hydra signups flagged "
            f"({', '.join(sorted({s['tier'] for s in flagged})) or 'none'}); "
            f"{len(clean)}/{len(honest)} honest signups at normal",
        )
    )


def _students(
    demo: Demo, world: Providers, harvested: list[tuple[str, str]], size: Size, screen: Screen
) -> None:
    """A student on the harvester's answers and a control on unwatermarked answers to the
    same prompts; each is tested against A's logged answers, cohort by cohort."""
    from distillguard.demo.student import QUICK_FINE_TUNE, examples, new_model, train
    from distillguard.engine.transformers_engine import TransformersEngine
    from distillguard.suspect.corpus import read_corpus
    from distillguard.suspect.run import accounts_of, reading_test

    settings = load_settings()
    screen.phase("loading the teacher's tokenizer and weights for the students")
    teacher = TransformersEngine.bundled(settings.cache_dir)
    prompts = [p for p, _ in harvested]
    advance = screen.phase("unwatermarked answers for the control student", len(prompts))
    plain = teacher.generate(
        prompts,
        max_new_tokens=size.answer_tokens,
        temperature=settings.generation.temperature,
        top_p=settings.generation.top_p,
        seed=demo.seed,
        on_batch=advance,
    )
    corpus_file = world.out / "answers.jsonl"  # what A's gateway logged of the real model
    with corpus_file.open("w") as handle:
        for row in EventStore(open_engine(world.store("a"))).read():
            if row["model"] == MODEL_NAME and row["status"] == 200:
                handle.write(json.dumps(row) + "\n")
    corpus = read_corpus(corpus_file)
    suspects = SuspectStore(open_engine(world.store("a")))
    trained_on = {
        f"student of {demo.student_account}": harvested,
        "control student (unwatermarked answers)": [
            (p, c.text) for p, c in zip(prompts, plain, strict=True)
        ],
    }
    for name, pairs in trained_on.items():
        screen.phase(f"fine-tuning the {name} on {len(pairs)} answers")
        model = new_model("fine-tuned", teacher, settings.cache_dir, demo.seed)
        train(model, examples(teacher, pairs), QUICK_FINE_TUNE, demo.seed)
        screen.phase(f"suspect test of the {name}")
        verdict, _ = reading_test(world.key, model, corpus, teacher, cohorts=COHORTS)
        document = verdict.document()
        if named := accounts_of(verdict, corpus):
            document["accounts"] = {str(c): a for c, a in named.items()}
        suspects.save(f"demo: {name}", document)
        demo.students.append(
            {
                "student": name,
                "verdict": document["verdict"],
                "p_value": document["p_value"],
                "named_cohorts": document["named_cohorts"],
                "control_p_value": document["control"]["p_value"],
                "accounts": document.get("accounts", {}),
            }
        )
        del model
    student, control = demo.students
    demo.outcomes.append(
        Outcome(
            "the student is named with its harvester's cohort",
            student["named_cohorts"] == [demo.student_cohort],
            f"named {student['named_cohorts'] or 'none'} (the harvester's cohort: "
            f"{demo.student_cohort}), p = {student['p_value']:.2g}",
        )
    )
    demo.outcomes.append(
        Outcome(
            "the control student is not named",
            control["named_cohorts"] == [] and control["verdict"] == "no evidence",
            f"named {control['named_cohorts'] or 'none'}, p = {control['p_value']:.2g}",
        )
    )
