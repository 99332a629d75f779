"""Tracing end to end through the real CLI: simulate, trace run (JSON, store, tiers), evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distillguard.store import AccountStore, ScoreStore, open_engine
from distillguard.tracing import linkage
from distillguard.tracing.features import Profile, describe
from distillguard.tracing.records import AccountRecord, TraceEvent
from distillguard.tracing.scoring import FLAG_AT, assess, evidence, kind

from .helpers import assert_user_error, run

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "prompts"


@pytest.fixture(scope="module")
def traffic(tmp_path_factory) -> Path:
    """A small default scenario: every archetype at least once (hydras of 100+ accounts)."""
    out = tmp_path_factory.mktemp("traffic")
    result = run(
        "simulate", "--out", str(out), "--scale", "0.04", "--seed", "11", "--corpus", str(SHARED)
    )
    assert result.returncode == 0, result.stderr
    return out


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().split("\n") if line.strip()]


def test_simulated_traffic_follows_the_contract(traffic):
    events, accounts, labels = (
        _read(traffic / f"{n}.jsonl") for n in ("events", "accounts", "labels")
    )
    archetypes = {label["archetype"] for label in labels}
    assert {
        "hydra",
        "reseller",
        "human_mimic",
        "batch_job",
        "eval_runner",
        "aggregator",
    } <= archetypes
    assert {a["account_id"] for a in accounts} == {label["account_id"] for label in labels}
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    assert all(e["ts"].endswith("Z") for e in events[:500])
    # A chat event ends on the user's turn; a completions event carries its prompt instead.
    assert all(
        e["messages"][-1]["role"] == "user" if "messages" in e else isinstance(e["prompt"], str)
        for e in events
    )
    asked = [e for e in events if "logprobs" in e or "prompt_logprobs" in e]
    assert asked and all(e["endpoint"] == "/completions" or "top_logprobs" in e for e in asked)


def test_simulate_outside_the_repository_uses_the_starter_corpus(tmp_path):
    """No shared/ in or beside the working folder: the corpus that ships with the package,
    said so; a folder named that holds no corpus is an error that writes nothing."""
    out = tmp_path / "out"
    alone = {"DISTILLGUARD_PROMPTS": ""}
    result = run("simulate", "--out", str(out), "--scale", "0.01", env=alone, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "starter corpus" in result.stdout + result.stderr
    events = _read(out / "events.jsonl")
    asked = {json.dumps(e.get("messages") or e.get("prompt")) for e in events}
    assert len(events) > 100 and len(asked) > 50
    empty = tmp_path / "empty"
    empty.mkdir()
    wrong = run("simulate", "--out", str(tmp_path / "no"), "--corpus", str(empty), cwd=tmp_path)
    assert_user_error(wrong, "no prompt corpus in")
    assert not (tmp_path / "no").exists()  # nothing half-written


def test_trace_run_writes_json_and_store_and_raises_tiers(traffic, tmp_path):
    store = f"sqlite:///{tmp_path / 'store.db'}"
    labels = {row["account_id"]: row for row in _read(traffic / "labels.jsonl")}
    attacker = next(a for a, row in labels.items() if row["archetype"] == "cot_harvester")
    bystander = next(a for a, row in labels.items() if row["archetype"] == "batch_job")
    blocked = next(a for a, row in labels.items() if row["archetype"] == "bulk_harvester")
    for account in (attacker, bystander, blocked):  # accounts the gateway knows
        assert run("keys", "issue", "--account", account, "--store", store).returncode == 0
    assert run("accounts", "set-tier", blocked, "block", "--store", store).returncode == 0

    out = tmp_path / "trace.json"
    result = run(
        "trace",
        "run",
        "--events",
        str(traffic / "events.jsonl"),
        "--accounts",
        str(traffic / "accounts.jsonl"),
        "--json",
        str(out),
        "--store",
        store,
        "--apply-tiers",
    )
    assert result.returncode == 0, result.stderr
    assert "flagged" in result.stdout and "tiers raised for" in result.stdout
    document = json.loads(out.read_text())
    by_id = {a["account_id"]: a for a in document["accounts"]}
    assert set(by_id) == set(labels)
    for account in document["accounts"]:
        assert set(account) == {
            "account_id",
            "score",
            "flagged",
            "cluster_id",
            "flagged_after_requests",
            "evidence",
            "requests",
        }
        assert 0.0 <= account["score"] <= 1.0
        assert (account["requests"] == 0) == (account["evidence"] == ["no requests"])
        assert (account["flagged_after_requests"] is not None) == account["flagged"]
    assert by_id[attacker]["flagged"] and not by_id[bystander]["flagged"]
    assert any("reasoning" in line for line in by_id[attacker]["evidence"])
    hydra_clusters = [c for c in document["clusters"] if c["flagged"] and len(c["accounts"]) >= 20]
    assert hydra_clusters and all(c["evidence"] for c in hydra_clusters)
    assert all(any("one operation" in line for line in c["evidence"]) for c in hydra_clusters)
    # The screen names flagged operations (size, what links them) before the accounts.
    largest = max(hydra_clusters, key=lambda c: len(c["accounts"]))
    screen = " ".join(result.stdout.split())
    assert screen.index("operation") < screen.index("flagged after")
    assert largest["cluster_id"] in screen.split("flagged after")[0]

    engine = open_engine(store)
    scores = ScoreStore(engine)
    run_id = scores.latest_run()
    saved = {row["account_id"]: row for row in scores.account_scores(run_id)}
    assert len(saved) == len(labels) and saved[attacker]["flagged"]
    tiers = {r.account_id: r.tier for r in AccountStore(engine).list_keys()}
    assert tiers == {attacker: "throttle", bystander: "normal", blocked: "block"}


def test_calibrated_thresholds_flag_the_share_of_the_reference_they_promise(traffic, tmp_path):
    labels = {row["account_id"]: row for row in _read(traffic / "labels.jsonl")}
    inputs = [
        "--events",
        str(traffic / "events.jsonl"),
        "--accounts",
        str(traffic / "accounts.jsonl"),
    ]
    reference_run = tmp_path / "reference.json"
    traced = run(
        "trace",
        "run",
        *inputs,
        "--json",
        str(reference_run),
        "--store",
        f"sqlite:///{tmp_path / 'a.db'}",
    )
    assert traced.returncode == 0, traced.stderr
    vouched = tmp_path / "vouched.txt"  # the accounts a provider vouches for: here, the benign
    benign = sorted(a for a, row in labels.items() if row["label"] == "benign")
    vouched.write_text("\n".join(benign) + "\n")

    calibrated = run(
        "trace",
        "calibrate",
        "--result",
        str(reference_run),
        "--reference",
        str(vouched),
        "--fpr",
        "0.02",
        "--watch-fpr",
        "0.1",
    )
    assert calibrated.returncode == 0, calibrated.stderr
    settings = dict(
        line.split(" = ") for line in calibrated.stdout.split("[tracing]\n")[1].splitlines()
    )
    assert set(settings) == {"watch_at", "throttle_at"}
    watch, throttle = float(settings["watch_at"]), float(settings["throttle_at"])
    assert 0.0 < watch <= throttle <= 1.0
    # Applied as settings, the thresholds flag at most the promised share of the vouched
    # accounts, and exactly as many as the calibration said reach them.
    again = tmp_path / "again.json"
    traced = run(
        "trace",
        "run",
        *inputs,
        "--json",
        str(again),
        "--store",
        f"sqlite:///{tmp_path / 'b.db'}",
        env={
            "DISTILLGUARD_TRACING__THROTTLE_AT": settings["throttle_at"],
            "DISTILLGUARD_TRACING__WATCH_AT": settings["watch_at"],
        },
    )
    assert traced.returncode == 0, traced.stderr
    flagged = {a["account_id"] for a in json.loads(again.read_text())["accounts"] if a["flagged"]}
    reached = len(flagged & set(benign))
    active = [a for a in json.loads(reference_run.read_text())["accounts"] if a["requests"]]
    calibrated_on = {a["account_id"] for a in active} & set(benign)
    assert reached <= 0.02 * len(calibrated_on)
    assert f"{reached:,} of {len(calibrated_on):,}" in calibrated.stdout
    # The threshold moves the flags monotonically: under the default (0.5) a superset.
    default = {
        a["account_id"] for a in json.loads(reference_run.read_text())["accounts"] if a["flagged"]
    }
    assert default <= flagged if throttle <= 0.5 else flagged <= default

    # What it refuses: too few accounts for the rate, a watch rate under the flag rate, ids
    # not in the run, a file that is not a run's document.
    assert_user_error(
        run("trace", "calibrate", "--result", str(reference_run), "--fpr", "0.00001"),
        "cannot measure a 0.00% rate",
    )
    assert_user_error(
        run("trace", "calibrate", "--result", str(reference_run), "--fpr", "0.2"),
        "must be at least the throttle rate",
    )
    stranger = tmp_path / "stranger.txt"
    stranger.write_text("acct_nobody\n")
    assert_user_error(
        run("trace", "calibrate", "--result", str(reference_run), "--reference", str(stranger)),
        "1 reference accounts are not in the scored run: acct_nobody",
    )
    for text in ("not json", '{"accounts": [{"account_id": "a", "score": 7}]}', "[1]"):
        (tmp_path / "bad.json").write_text(text)
        assert_user_error(
            run("trace", "calibrate", "--result", str(tmp_path / "bad.json")), "bad.json is not"
        )


def test_bad_lines_are_reported_and_a_file_of_nothing_writes_nothing(traffic, tmp_path):
    store = f"sqlite:///{tmp_path / 'store.db'}"
    lines = (traffic / "events.jsonl").read_text().split("\n")[:300]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join([lines[0], "{broken", *lines[1:], '{"ts": 1}']) + "\n")
    result = run("trace", "run", "--events", str(mixed), "--store", store)
    assert result.returncode == 0, result.stderr
    assert f"{mixed}:2: not JSON" in result.stderr
    assert f"{mixed}:302: missing `account_id`" in result.stderr
    assert "300 records read, 2 bad lines skipped" in result.stderr
    assert ScoreStore(open_engine(store)).latest_run() == 1

    junk = tmp_path / "junk.jsonl"
    junk.write_text("{broken\n[]\n")
    empty_store = f"sqlite:///{tmp_path / 'empty.db'}"
    result = run("trace", "run", "--events", str(junk), "--store", empty_store)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no usable events" in result.stderr
    assert ScoreStore(open_engine(empty_store)).latest_run() is None
    assert_user_error(run("trace", "run", "--events", str(tmp_path / "nope.jsonl")), "cannot read")
    result = run(
        "trace",
        "run",
        "--events",
        str(mixed),
        "--store",
        empty_store,
        "--json",
        str(tmp_path / "missing" / "out.json"),
    )
    assert_user_error(result, "is not a directory")
    assert ScoreStore(open_engine(empty_store)).latest_run() is None  # checked before any work


def test_evaluation_reduced_run(traffic, tmp_path):
    report = tmp_path / "report"
    result = run(
        "trace",
        "evaluate",
        "--events",
        str(traffic / "events.jsonl"),
        "--labels",
        str(traffic / "labels.jsonl"),
        "--accounts",
        str(traffic / "accounts.jsonl"),
        "--report",
        str(report),
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((report / "report.json").read_text())
    ours = metrics["account_level"]["distillguard"]
    assert ours["roc_auc"] >= 0.95 and ours["tpr_at_1pct_fpr"] >= 0.9
    assert ours["roc_auc"] > metrics["account_level"]["baseline_volume"]["roc_auc"]
    assert metrics["heavy_benign"]["accounts"] > 0 and metrics["heavy_benign"]["fpr"] <= 0.05
    assert metrics["hydra_linkage"]["share"] >= 0.9
    assert metrics["time_to_flag"]["bulk_attackers"]["median_requests"] <= 300
    assert (report / "roc.png").read_bytes().startswith(b"\x89PNG")
    page = (report / "report.html").read_text()
    assert "<img" in page and "simulated" in page
    assert "tpr_at_1pct_fpr" not in page and "TPR at 1 % FPR" in page  # words, not keys
    assert ">True<" not in page and ">False<" not in page
    said = " ".join(result.stdout.split())  # as printed, wrapped to the terminal
    assert "bulk attackers flagged, after a median of" in said and "None" not in said, said
    assert "baseline: PRADA" in said, said


def test_scoring_needs_scale_extraction_and_automation_together():
    harvester = {
        "requests": 3000.0,
        "active_days": 7.0,
        "requests_per_day": 430.0,
        "mean_answer_tokens": 1100.0,
        "cot_rate": 0.9,
        "multi_turn_rate": 0.0,
        "long_answer_rate": 0.8,
        "short_answer_rate": 0.0,
        "probe_rate": 0.0,
        "logprob_rate": 0.0,
        "scored_text_rate": 0.0,
        "near_duplicate_rate": 0.1,
        "template_rate": 0.9,
        "shared_template_rate": 0.0,
        "extractive_rate": 0.8,
        "repeat_rate": 0.0,
        "warm_repeat_rate": 0.0,
        "cold_repeat_rate": 0.0,
        "swept_repeat_rate": 0.0,
        "distinct_rate": 1.0,
        "distinct_prompts": 3000.0,
        "traces": 3000.0,
        "answer_to_prompt": 8.0,
        "expansion": 8.0,
        "valuable_rate": 0.6,
        "mean_max_tokens": 4096.0,
        "pivot_share": 0.0,
        "pivot_hours": 0.0,
        "area_coverage": 0.5,
        "top_area_share": 0.6,
        "hour_spread": 0.99,
        "active_hours": 24.0,
        "gap_log_sd": 0.4,
    }
    assert assess(harvester).score >= FLAG_AT
    small = {
        **harvester,
        "requests": 30.0,
        "traces": 30.0,
        "requests_per_day": 10.0,
        "hour_spread": 0.5,
    }
    labels_only = {
        **harvester,
        "short_answer_rate": 1.0,
        "cot_rate": 0.0,
        "long_answer_rate": 0.0,
        "mean_answer_tokens": 5.0,
        "extractive_rate": 0.0,
    }
    # An evaluation harness: the same benchmark items again and again, moderate answers.
    reruns = {
        **harvester,
        "repeat_rate": 0.8,
        "cold_repeat_rate": 0.8,
        "distinct_prompts": 400.0,
        "traces": 400.0,
        "cot_rate": 0.5,
        "mean_answer_tokens": 450.0,
        "long_answer_rate": 0.1,
        "extractive_rate": 0.1,
        "template_rate": 0.2,
    }
    person = {
        **harvester,
        "requests": 400.0,
        "traces": 400.0,
        "requests_per_day": 50.0,
        "multi_turn_rate": 0.6,
        "hour_spread": 0.6,
    }
    # Long answers that give back what they were given (translation, grading, summaries).
    transform = {**harvester, "expansion": 1.0, "extractive_rate": 0.0}
    # Long templated product copy: scale and automation, but no capability worth copying.
    copy = {**harvester, "cot_rate": 0.0, "valuable_rate": 0.1}
    for benign in (small, labels_only, reruns, person, transform, copy):
        assert not assess(benign).score >= FLAG_AT, benign
    # The same prompts sampled again at temperature > 0 with long answers: best-of-n.
    best_of_n = {
        **reruns,
        "cold_repeat_rate": 0.0,
        "warm_repeat_rate": 0.8,
        "traces": 2400.0,
        "mean_answer_tokens": 900.0,
    }
    assert assess(best_of_n).score >= FLAG_AT
    # The same items re-sent at other temperatures: an experiment on the model, not best-of-n.
    sweep = {**best_of_n, "warm_repeat_rate": 0.0, "swept_repeat_rate": 0.8, "traces": 400.0}
    assert not assess(sweep).score >= FLAG_AT
    assert any("temperature sweep" in line for line in evidence(sweep))
    assert assess(best_of_n).components["extraction"] > assess(reruns).components["extraction"]
    # A light account's traffic can be of the extractive kind without proving anything alone.
    light = {**harvester, "requests": 10.0, "traces": 10.0, "requests_per_day": 10.0}
    assert not assess(light).score >= FLAG_AT and kind(light) >= 0.9


def test_resends_are_read_by_their_temperature():
    """A re-send at temperature 0 is a re-run, at the same sampling temperature best-of-n, at
    another temperature a sweep; inside one conversation it is an agent's step, no re-send."""
    prompt = "Prove that the square root of two is irrational, with every step written out."

    def rates(temperatures, conversation=None):
        events = [
            TraceEvent(
                ts=float(i),
                account_id="a",
                text=prompt,
                user_turns=1,
                temperature=t,
                conversation_id=conversation,
            )
            for i, t in enumerate(temperatures)
        ]
        profile = Profile()
        for event, row in zip(events, describe(events).rows(), strict=True):
            profile.add(event, row)
        f = profile.features()
        return f["cold_repeat_rate"], f["warm_repeat_rate"], f["swept_repeat_rate"]

    assert rates([0.0] * 4) == (0.75, 0.0, 0.0)
    assert rates([1.0] * 4) == (0.0, 0.75, 0.0)
    assert rates([None] * 4) == (0.0, 0.75, 0.0)  # the provider's default samples
    assert rates([0.0, 0.7, 1.0, 0.0]) == (0.0, 0.0, 0.75)
    assert rates([1.0] * 4, conversation="c1") == (0.0, 0.0, 0.0)


def test_a_text_scored_token_by_token_is_probing_not_labelling_or_completion():
    """One-token answers to a text that grows a word at a time are logit harvesting; one-token
    labels of different texts, a multiple-choice item scored choice by choice, and an
    editor's completions of a growing file are not."""
    words = ("Let x be the number of apples; then 3x + 4 = 19, so 3x = 15 and x = 5. " * 40).split()
    grown = [" ".join(words[:end])[-2000:] for end in range(8, len(words))]
    labels = [f"Classify the sentiment of review {i}: the parcel came late." for i in range(400)]
    context = "Which planet is largest? A) Mars B) Jupiter C) Venus D) Earth. Answer:"
    choices = [f"{context} {c}" for _ in range(100) for c in "ABCD"]

    def profile(texts, max_tokens, logprobs=False):
        events = [
            TraceEvent(
                ts=i * 60.0,
                account_id="a",
                text=t,
                user_turns=1,
                max_tokens=max_tokens,
                temperature=0.0,
                completion_tokens=1,
                logprobs=logprobs,
            )
            for i, t in enumerate(texts)
        ]
        profile = Profile()
        for event, row in zip(events, describe(events).rows(), strict=True):
            profile.add(event, row)
        return profile.features()

    prober = profile(grown, 1)
    # Several texts scored in turn, one position of each at a time, are probes too ...
    texts = [[t.replace("apples", f"pears{k}") for t in grown] for k in range(20)]
    interleaved = profile([t for turn in zip(*texts, strict=True) for t in turn], 1)
    assert interleaved["probe_rate"] > 0.95
    # ... and so are a few tokens each, when their log-probabilities are what is asked for.
    assert profile(grown, 8, logprobs=True)["probe_rate"] > 0.95
    assert profile(grown, 8)["probe_rate"] == 0.0
    assert prober["probe_rate"] > 0.95 and prober["short_answer_rate"] < 0.05
    assert assess(prober).components["extraction"] == 1.0
    assert any("log-probabilities" in line for line in evidence(prober))
    for benign in (
        profile(labels, 1),
        profile(labels, 1, logprobs=True),  # a classifier's confidences
        profile(choices, 1, logprobs=True),
        profile(grown, 32),
        profile(grown, 32, logprobs=True),
    ):
        assert benign["probe_rate"] == 0.0 and benign["short_answer_rate"] == 1.0


def test_a_whole_text_sent_to_be_scored_is_harvest_a_benchmark_scored_is_not():
    """`prompt_logprobs` (or `echo` with `logprobs`) returns the model's distribution at every
    position of the prompt: distinct worked solutions scored so are logit distillation in
    one request each; a bounded multiple-choice benchmark scored so on several models, and
    long texts scored without asking for the prompt's log-probabilities, are not."""
    step = "Let x be the number of apples; then 3x + 4 = 19, so 3x = 15 and x = 5. "
    solutions = [f"Problem {i}: solve for x, every step shown.\n{step * 20}" for i in range(600)]
    passage = "A reading passage about the tides and the moon's pull on the seas. " * 20
    items = [f"{passage}\nQuestion {i}: why? Answer: {c}" for i in range(100) for c in "ABCD"]

    def features(texts, prompt_logprobs, temperature=0.0):
        events = [
            TraceEvent(
                ts=i * 20.0,
                account_id="a",
                text=t,
                user_turns=1,
                max_tokens=1,
                temperature=temperature,
                completion_tokens=1,
                logprobs=True,
                prompt_logprobs=prompt_logprobs,
            )
            for i, t in enumerate(texts)
        ]
        profile = Profile()
        for event, row in zip(events, describe(events).rows(), strict=True):
            profile.add(event, row)
        return profile.features()

    harvest = features(solutions * 2, prompt_logprobs=True)
    assert harvest["scored_text_rate"] == 1.0 and harvest["short_answer_rate"] == 0.0
    assert assess(harvest).components["extraction"] == 1.0
    assert any("its own tokens scored" in line for line in evidence(harvest))
    # Four models in turn: the same items again at temperature 0, a bounded set re-run.
    benchmark = features(items * 4, prompt_logprobs=True)
    assert benchmark["scored_text_rate"] == 1.0 and assess(benchmark).score < FLAG_AT
    unscored = features(solutions, prompt_logprobs=False)
    assert unscored["scored_text_rate"] == 0.0


def test_operation_ties_are_what_one_operator_reuses_not_an_office():
    """Cards (and signup bursts, signup IPs, email shapes, timing) tie accounts into one
    operator's crew; an office IP or a company mail domain links colleagues, and ties none."""
    operator = [AccountRecord(f"h{i}", payment_fingerprint="card-1") for i in range(4)]
    colleagues = [AccountRecord(f"o{i}", email=f"person{i}@acme.example") for i in range(4)]
    things = {
        a.account_id: linkage.account_things(a, ["203.0.113.7"], (), ())
        for a in operator + colleagues
    }
    (cluster,) = linkage.clusters(things)
    assert len(cluster.accounts) == 8  # one office IP puts everyone in one cluster ...
    everyone = set(cluster.accounts)
    assert cluster.tied(everyone) == {a.account_id for a in operator}  # ... one crew
    assert cluster.tied({"h0", "o0", "o1"}) == set()  # a lone card holder is tied to no one


def test_linkage_joins_shared_cards_not_shared_clients():
    shared = [
        AccountRecord(
            f"h{i}",
            payment_fingerprint=f"card{i % 2}",
            signup_ip=f"45.1.2.{i % 3}",
            email=f"qxwvzkpt{1000 + i}@gmail.com",
        )
        for i in range(12)
    ]
    strangers = [
        AccountRecord(f"s{i}", payment_fingerprint=f"own{i}", email=f"anna.smith{i}@gmail.com")
        for i in range(40)
    ]
    things = {
        a.account_id: linkage.account_things(a, [], ["openai-python/1.54"], [])
        for a in shared + strangers
    }
    found = linkage.clusters(things)
    assert [c.accounts for c in found] == [sorted(a.account_id for a in shared)]
    assert found[0].shared["payment"] == 2


def test_linkage_joins_accounts_one_scheduler_drives_not_people_with_the_same_habits():
    """One scheduler's accounts share nothing but their minutes; office workers share hours
    every day and nightly cron jobs share 02:00: only the scheduler's accounts link."""
    rng = np.random.default_rng(3)
    day, start = 86_400.0, 1_760_000_000.0
    who: list[str] = []
    ts: list[float] = []

    def send(account: str, times) -> None:
        who.extend([account] * len(times))
        ts.extend(times)

    waves = start + np.sort(rng.uniform(0, 7 * day, 30))
    for i in range(40):  # each works through 8-15 of the operator's waves
        chosen = rng.choice(waves, rng.integers(8, 16), replace=False)
        send(f"op{i}", np.repeat(chosen, 3) + rng.uniform(0, 300, 3 * len(chosen)))
    for i in range(300):  # people: a habitual hour of the day, on some of the days
        hour = rng.integers(8, 18)
        for d in rng.choice(7, rng.integers(2, 7), replace=False):
            send(f"person{i}", start + d * day + hour * 3600 + rng.uniform(0, 3600, 4))
    for i in range(10):  # nightly jobs at 02:00, every day
        nightly = [start + d * day + 2 * 3600 + k * 30.0 for d in range(7) for k in range(60)]
        send(f"cron{i}", nightly)
    names = sorted(set(who))
    number = {name: i for i, name in enumerate(names)}
    pairs = linkage.synchronised(names, np.array([number[w] for w in who]), np.array(ts))

    assert pairs and all(a.startswith("op") and b.startswith("op") for a, b in pairs)
    assert len(pairs) <= 40 * linkage.PARTNERS  # bounded: not every pair of the operation
    found = linkage.clusters({name: [] for name in names}, pairs)
    assert len(found) == 1 and len(found[0].accounts) >= 36  # (a few share too few waves)
    assert "beyond chance" in found[0].links()
    # A day of traffic has no other day to judge habits by: nothing is linked.
    one_day = np.array(ts) < start + day
    assert not linkage.synchronised(
        names, np.array([number[w] for w in who])[one_day], np.array(ts)[one_day]
    )


def _light_population(people: int, carriers: int, seed: int = 5) -> list[TraceEvent]:
    """`people` light accounts chatting (short answers, conversations) and `carriers` light
    accounts sharing nothing (own IP, own hours) that each ask ~30 distinct questions for
    written-out reasoning with long answers: a careful hydra's members, one by one."""
    rng = np.random.default_rng(seed)
    subjects = ["train", "tank", "loan", "recipe", "orbit", "circuit", "garden", "ladder"]
    verbs = ["derive", "prove", "work out", "explain", "compute", "justify"]
    events: list[TraceEvent] = []
    week = 7 * 86_400.0
    for i in range(people):
        for k, ts in enumerate(np.sort(rng.uniform(0, week, 3))):
            events.append(
                TraceEvent(
                    ts=float(ts),
                    account_id=f"p{i:04d}",
                    text=f"what's a nice name for my {subjects[k % 8]} #{i}?",
                    user_turns=1 + k,
                    ip=f"10.{i // 250}.{i % 250}.{k}",
                    prompt_tokens=12,
                    completion_tokens=60,
                    response_chars=240,
                )
            )
    for i in range(carriers):
        for k, ts in enumerate(np.sort(rng.uniform(0, week, 30))):
            a, b = rng.integers(2, 999, 2)
            events.append(
                TraceEvent(
                    ts=float(ts),
                    account_id=f"h{i:04d}",
                    text=f"Think step by step and {verbs[k % 6]}, showing all your reasoning, "
                    f"how a {subjects[(i + k) % 8]} problem with {a} and {b} is solved.",
                    user_turns=1,
                    ip=f"172.16.{i}.{k % 3}",
                    max_tokens=4096,
                    prompt_tokens=30,
                    completion_tokens=int(rng.integers(900, 1400)),
                    response_chars=4500,
                )
            )
    return sorted(events, key=lambda e: e.ts)


def test_a_hydra_that_shares_nothing_is_a_crowd_a_few_light_reasoners_are_not():
    """Light accounts of steadily extractive traffic are a hydra's trace when there are far
    more of them than the population's base rate explains; a few are a population's own."""
    from distillguard.tracing.run import CROWD, trace

    hydra = trace(_light_population(1000, 60), {})
    members = [a for a in hydra.accounts if a.account_id.startswith("h")]
    assert hydra.crowd is not None and hydra.crowd.cluster_id == CROWD
    assert len(hydra.crowd.accounts) == 60 and hydra.crowd.flagged
    assert all(a.flagged for a in members)
    assert all(
        any(line.startswith("one of 60 light accounts") for line in a.evidence) for a in members
    )
    assert not any(a.flagged for a in hydra.accounts if a.account_id.startswith("p"))
    assert hydra.document()["crowd"]["accounts"] == sorted(a.account_id for a in members)
    few = trace(_light_population(1000, 2), {})
    assert few.crowd is None and few.document()["crowd"] is None
    assert not any(a.flagged for a in few.accounts)
