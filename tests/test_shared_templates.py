"""Templates other providers shared (keyed MinHash signatures): a prompt that fills one counts
as templated from its first occurrence. Real prompts from ../shared/data/prompts."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from distillguard.config import TracingSettings
from distillguard.store import AccountStore, Event, open_engine
from distillguard.tracing import minhash
from distillguard.tracing.features import Profile, describe
from distillguard.tracing.online import OnlineTracer
from distillguard.tracing.records import TraceEvent
from distillguard.tracing.run import trace
from distillguard.tracing.shared import MATCH_AT, SharedTemplates

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "prompts"
SEED = 0x5EED_0FC0_A5E5_0001  # a consortium key's secret MinHash seed
OTHER_SEED = 0x0DDB_A11C_0FFE_E002
TEMPLATE = (
    "You are an autonomous software engineering agent. You can call the tools `read_file`, "
    "`write_file`, `run_tests` and `bash`. Plan the change, show every tool call as JSON, "
    "then give the final patch.\n\nTask: {}"
)


def _corpus(name: str) -> list[str]:
    lines = (SHARED / f"{name}.jsonl").read_text(encoding="utf-8").split("\n")
    return [json.loads(line)["turns"][0] for line in lines if line.strip()]


@pytest.fixture(scope="module")
def code() -> list[str]:
    return _corpus("codealpaca")


@pytest.fixture(scope="module")
def ordinary() -> list[str]:
    """Ordinary prompts of every kind (chat, coding, maths, Chinese, role-play)."""
    rng = random.Random(1)
    names = ("self_instruct", "instructionwild", "gsm8k", "belle_zh", "awesome_chatgpt_prompts")
    sample = [p for name in names for p in rng.sample(_corpus(name), 400)]
    return sample + _corpus("codealpaca")[-400:]  # the fixtures' fillings come from the start


@pytest.fixture(scope="module")
def shared(code) -> SharedTemplates:
    """What another provider shared: the template, as three prompts that filled it."""
    return SharedTemplates.from_signatures(
        {SEED: minhash.signatures([TEMPLATE.format(q) for q in code[:3]], seed=SEED)}
    )


def _matches(shared: SharedTemplates, texts: list[str]) -> np.ndarray:
    return shared.matches(minhash.Texts.of(minhash.openings(texts)))


def _event(i: int, text: str, tokens: int, account: str = "a") -> TraceEvent:
    return TraceEvent(
        ts=1.8e9 + i * 900.0,
        account_id=account,
        text=text,
        user_turns=1,
        completion_tokens=tokens,
        max_tokens=4096,
        model="m",
    )


def test_the_index_finds_what_comparing_every_pair_finds(ordinary):
    """Candidates from the bin index, confirmed in full, miss nothing a full comparison finds
    (minhash.similarity over every pair), with repeated signatures in the shared set."""
    prompts = random.Random(2).sample(ordinary, 700)
    listed = prompts[:300] + prompts[:20]
    queries = prompts[300:] + listed[:30]
    signatures = minhash.signatures(listed, seed=SEED)
    found = _matches(SharedTemplates.from_signatures({SEED: signatures}), queries)
    mine = minhash.signatures(queries, seed=SEED)
    expected = [
        len(q.lower().encode()[:512]) >= 80
        and max(minhash.similarity(row, s) for s in signatures) >= MATCH_AT
        for q, row in zip(queries, mine, strict=True)
    ]
    assert found.tolist() == expected
    assert 15 <= found.sum() <= 40  # the listed prompts of 80 bytes or more, a few others


def test_fillings_match_and_unrelated_prompts_do_not(shared, code, ordinary):
    fillings = [TEMPLATE.format(q) for q in code[1000:1300]]
    assert _matches(shared, fillings).mean() >= 0.6
    assert _matches(shared, ordinary).sum() <= 2  # of 2,400
    assert len(shared) == 3


def test_a_signature_under_another_key_matches_nothing(code):
    """Keyed: the same template signed under another seed (another consortium's key, or no
    key) is not recognised, and a shared set under another seed sees nothing."""
    fillings = [TEMPLATE.format(q) for q in code[1000:1100]]
    listed = [TEMPLATE.format(q) for q in code[:3]]
    right = SharedTemplates.from_signatures({SEED: minhash.signatures(listed, seed=SEED)})
    assert _matches(right, fillings).mean() >= 0.6
    for seed in (OTHER_SEED, 0):  # signed under another key, or unkeyed
        wrong = SharedTemplates.from_signatures({SEED: minhash.signatures(listed, seed=seed)})
        assert not _matches(wrong, fillings).any()
    elsewhere = SharedTemplates.from_signatures({OTHER_SEED: minhash.signatures(listed, seed=SEED)})
    assert not _matches(elsewhere, fillings).any()


def test_a_shared_template_counts_from_its_first_filling(shared, code):
    """Without the shared set a template counts from its second filling (a refill of a
    skeleton seen before); with it, from the first."""
    events = [_event(i, TEMPLATE.format(q), 900) for i, q in enumerate(code[1000:1002])]
    counts = {}
    for name, given in (("alone", None), ("shared", shared)):
        profile, templated = Profile(), []
        for event, row in zip(events, describe(events, given).rows(), strict=True):
            profile.add(event, row)
            templated.append(profile.templated)
        counts[name] = (templated, profile.extractive, profile.shared)
    assert counts["alone"] == ([0, 1], 1, 0)
    assert counts["shared"] == ([1, 2], 2, 2)


def test_an_account_filling_a_shared_template_twice_rises(shared, code, ordinary):
    """Ten requests, two of them filling the template: alone, 10 % templated (below every
    anchor, no word in the evidence); with the shared set, 20 %, said in the evidence, and
    the score rises (the extractive share doubles)."""
    rng = random.Random(5)
    others = rng.sample(ordinary[:400], 8)  # self-instruct tasks
    texts = [*others[:4], TEMPLATE.format(code[1000]), *others[4:], TEMPLATE.format(code[1001])]
    events = [_event(i, t, 900) for i, t in enumerate(texts)]
    alone = trace(events, {}).accounts[0]
    together = trace(events, {}, shared=shared).accounts[0]
    said = "20% of prompts match templates other providers shared"
    assert not any("templates other providers" in line for line in alone.evidence)
    assert not any("repeated template" in line for line in alone.evidence), alone.evidence
    assert said in together.evidence
    assert "20% of prompts fill a repeated template" in together.evidence
    assert together.score > 1.5 * alone.score


def _disguised(rng: random.Random, code: list[str], n: int, account: str) -> list[TraceEvent]:
    """A sweep that hides its skeleton: every prompt opens with a new ticket name (letters:
    digits are masked) and closes with its task, so no opening or closing recurs."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    texts = [
        f"Ticket {''.join(rng.choices(letters, k=8))}. " + TEMPLATE.format(rng.choice(code[1000:]))
        for _ in range(n)
    ]
    return [_event(i, t, 400, account) for i, t in enumerate(texts)]


def test_a_sweep_that_hides_its_skeleton_is_caught_through_the_shared_template(shared, code):
    events = _disguised(random.Random(6), code, 300, "b")
    alone = trace(events, {}).accounts[0]
    together = trace(events, {}, shared=shared).accounts[0]
    assert alone.score < 0.3 and not alone.flagged
    assert together.flagged and together.flagged_after_requests <= 100
    said = [line for line in together.evidence if "templates other providers shared" in line]
    assert said and said[0].endswith("% of prompts match templates other providers shared")


def test_an_empty_shared_set_changes_nothing(code, ordinary):
    rng = random.Random(7)
    events = _disguised(rng, code, 120, "b") + [
        _event(i, t, 300, "c") for i, t in enumerate(rng.sample(ordinary, 150))
    ]
    empty = SharedTemplates.from_signatures({})
    assert len(empty) == 0 and not empty
    assert describe(events, empty).shared is None  # nothing computed
    baseline = trace(events, {}).document()
    assert trace(events, {}, shared=empty).document() == baseline
    # ... and a set that holds only signatures of nothing is empty too
    nothing = SharedTemplates.from_signatures({SEED: minhash.signatures([""], seed=SEED)})
    assert len(nothing) == 0
    assert trace(events, {}, shared=nothing).document() == baseline


def test_the_online_tracer_raises_a_tier_through_the_shared_set(shared, code, tmp_path):
    accounts = AccountStore(open_engine(f"sqlite:///{tmp_path / 'store.db'}"))
    rng = random.Random(8)
    for account, given in (("plain", None), ("warned", shared)):
        accounts.issue_key(account)
        tracer = OnlineTracer(accounts, TracingSettings(), shared=given)
        rows = [
            Event(
                ts=e.ts,
                request_id=f"{account}-{i}",
                endpoint="/v1/chat/completions",
                status=200,
                latency_ms=5.0,
                decision="admitted",
                account_id=account,
                model="m",
                request={
                    "messages": [{"role": "user", "content": e.text}],
                    "max_tokens": 4096,
                },
                completion_tokens=400,
            )
            for i, e in enumerate(_disguised(rng, code, 300, account))
        ]
        for start in range(0, len(rows), 50):
            tracer.observe(rows[start : start + 50])
    assert accounts.account_tier("plain")[0] == "normal"
    assert accounts.account_tier("warned")[0] == "throttle"
