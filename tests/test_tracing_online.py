"""Online tracing in the gateway: an account's own traffic raises its tier while it runs,
and shadow mode only logs what it would do."""

from __future__ import annotations

import random
import time

import httpx
import pytest

from distillguard.policy import Limits
from distillguard.store import AccountStore, EventStore, open_engine
from tests.gateway_stack import gateway

TEMPLATE = (
    "You are an autonomous software engineering agent with the tools read_file, write_file "
    "and run_tests. Plan the change, show every tool call as JSON, then the patch.\n\nTask: {}"
)
SOLUTIONS = "long-900"  # the fake upstream's answers, 900 completion tokens each
WORDS = [
    "parser",
    "cache",
    "queue",
    "router",
    "ledger",
    "invoice",
    "scheduler",
    "upload",
    "token",
    "mailer",
]


def _task(rng: random.Random) -> str:
    return f"add {rng.choice(WORDS)} support to the {rng.choice(WORDS)} {rng.choice(WORDS)} module"


def _send(
    stack, key: str, prompts: list[str], model: str = "fake-model", *, throttled: bool = False
) -> int:
    """Send `prompts` in turn; returns how many were answered.

    With `throttled`, the account's throttled token budget may end the run early: the tracer
    can raise the tier while the sweep runs (how soon depends on the machine's speed).
    """
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        for sent, prompt in enumerate(prompts):
            body = {"model": model, "messages": [{"role": "user", "content": prompt}]}
            response = http.post(
                "/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
            )
            if throttled and response.status_code == 429:
                assert response.json()["error"]["code"] == "rate_limit_exceeded"
                assert response.json()["error"]["type"] == "tokens"
                assert "for account" in response.json()["error"]["message"]
                return sent
            assert response.status_code == 200, response.text
    return len(prompts)


def _tier(accounts: AccountStore, account: str) -> str:
    return next(r.tier for r in accounts.list_keys() if r.account_id == account)


def _traffic(accounts: AccountStore) -> tuple[dict[str, str], list[str], list[str]]:
    """Keys for a sweeper and a steady user, and what each sends."""
    keys = {
        name: accounts.issue_key(name, None, Limits(rpm=100_000, tpm=10**9)).api_key
        for name in ("sweeper", "steady")
    }
    time.sleep(0.5)  # key refresh
    rng = random.Random(3)
    # A sweep takes away full solutions: long answers, many times its short tasks.
    sweep = [TEMPLATE.format(_task(rng)) for _ in range(250)]
    chatter = [f"Question {i}: {rng.choice(WORDS)} or {rng.choice(WORDS)}?" for i in range(170)]
    return keys, sweep, chatter


@pytest.mark.parametrize("shadow", [False, True], ids=["enforced", "shadow"])
def test_a_templated_sweep_is_throttled_while_it_runs(upstream, tmp_path, shadow):
    store = f"sqlite:///{tmp_path / 'store.db'}"
    accounts = AccountStore(open_engine(store))
    extra = ["--shadow"] if shadow else []
    with gateway(upstream, store, *extra) as stack:
        keys, sweep, chatter = _traffic(accounts)
        _send(stack, keys["sweeper"], sweep, model=SOLUTIONS, throttled=not shadow)
        _send(stack, keys["steady"], chatter)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _tier(accounts, "sweeper") == "normal":
            if shadow and "shadow" in httpx.get(stack.url.removesuffix("/v1") + "/metrics").text:
                break
            time.sleep(0.2)
        metrics = httpx.get(stack.url.removesuffix("/v1") + "/metrics").text
        if shadow:
            assert _tier(accounts, "sweeper") == "normal"
            assert 'distillguard_tracing_tier_changes_total{mode="shadow",tier="throttle"} 1.0' in (
                metrics
            )
        else:
            assert _tier(accounts, "sweeper") == "throttle"
            assert 'mode="enforced",tier="throttle"' in metrics
            # One more request after the key refresh: it carries the raised tier (or is refused
            # by the throttled budget, whose refusal is recorded with the tier too).
            _send(
                stack,
                keys["sweeper"],
                [TEMPLATE.format("one more")],
                model=SOLUTIONS,
                throttled=True,
            )
        assert _tier(accounts, "steady") == "normal"
    if not shadow:
        events = list(EventStore(open_engine(store)).read(account_id="sweeper"))
        assert events[-1]["tier"] == "throttle" and events[0]["tier"] == "normal"
        reason = next(r for r in accounts.list_keys() if r.account_id == "sweeper")
        assert reason.tier == "throttle"
