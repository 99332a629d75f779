"""`trace run --store` on the events a real gateway wrote: SQLite and PostgreSQL.

The store is the gateway's own, so whatever its driver hands back (row types, key
types, JSON columns) is what tracing must read; a synthetic file would not catch that.
"""

from __future__ import annotations

import json
import time
import uuid

import openai
import pytest

from distillguard.policy import Limits
from distillguard.store import AccountStore, open_engine
from tests import servers
from tests.gateway_stack import gateway
from tests.helpers import assert_user_error, run

ACCOUNTS = ("acct-alpha", "acct-beta", "acct-gamma")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    server = request.getfixturevalue("postgres_server")
    return servers.new_database(server, f"trace_{uuid.uuid4().hex[:8]}")


def test_trace_run_reads_every_event_a_real_gateway_stored(upstream, store, tmp_path):
    accounts = AccountStore(open_engine(store))
    keys = {a: accounts.issue_key(a, "org-" + a, Limits()).api_key for a in ACCOUNTS}
    answered = 0
    with gateway(upstream, store) as stack:
        time.sleep(0.5)  # the gateway reloads keys every 0.2 s in these tests
        for account, key in keys.items():
            sdk = openai.OpenAI(base_url=stack.url, api_key=key, max_retries=0)
            for i in range(3):
                messages = [{"role": "user", "content": f"{account} question {i}\x00?"}]
                sdk.chat.completions.create(model="fake-model", messages=messages)
                answered += 1
            list(sdk.chat.completions.create(model="fake-model", messages=messages, stream=True))
            sdk.completions.create(model="fake-model", prompt=[f"{account} text"])
            answered += 2
        with pytest.raises(openai.AuthenticationError):  # stored, but nobody to trace
            openai.OpenAI(base_url=stack.url, api_key="dg-no-such-key", max_retries=0).models.list()
    out = tmp_path / "run.json"
    result = run("trace", "run", "--store", store, "--json", str(out), "--apply-tiers")
    assert result.returncode == 0, result.stderr
    assert "skipped" not in result.stderr, result.stderr
    assert f"{answered} events, {len(ACCOUNTS)} accounts" in result.stdout, result.stdout
    document = json.loads(out.read_text())
    assert sorted(a["account_id"] for a in document["accounts"]) == sorted(ACCOUNTS)


def _events(path, account: str, n: int) -> None:
    rows = (
        {
            "ts": 1_790_000_000 + 60 * i,
            "account_id": account,
            "messages": [{"role": "user", "content": f"Solve step by step: problem {i}"}],
            "completion_tokens": 900,
        }
        for i in range(n)
    )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_accounts_show_says_why_an_account_has_its_tier(store, tmp_path):
    accounts = AccountStore(open_engine(store))
    kept = accounts.issue_key("acct-alpha", "org-a", Limits(rpm=50), name="batch").record
    gone = accounts.issue_key("acct-alpha").record
    accounts.revoke_key(gone.key_id)
    accounts.set_limits("account", "acct-alpha", Limits(rpm=300))
    accounts.set_tier("acct-alpha", "throttle", "bulk harvesting: 92% reasoning requests")
    for n in (40, 12):  # two runs: the newer one is what `show` reports
        _events(tmp_path / "events.jsonl", "acct-alpha", n)
        result = run("trace", "run", "--events", str(tmp_path / "events.jsonl"), "--store", store)
        assert result.returncode == 0, result.stderr

    result = run("accounts", "show", "acct-alpha", "--store", store, "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["tier"] == "throttle" and shown["tier_reason"].startswith("bulk harvesting")
    assert [k["key_id"] for k in shown["keys"]] == [kept.key_id, gone.key_id]
    # The throttle tier's ×0.1 over each scope's own limit, or the default where none is set.
    in_effect = shown["in_effect"]
    assert in_effect["account"]["rpm"] == 30 and in_effect["org"]["rpm"] == 600
    assert in_effect[f"key {kept.key_id}"]["rpm"] == 5
    assert f"key {gone.key_id}" not in in_effect  # revoked: applies to nothing
    latest = shown["latest_score"]
    assert latest["evidence"] and "12 requests" in latest["evidence"][0]

    result = run("accounts", "show", "acct-alpha", "--store", store, env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    for fragment in ("bulk harvesting: 92% reasoning requests", "revoked", "12 requests"):
        assert fragment in result.stdout, result.stdout
    # However narrow the terminal, the ids `keys revoke` needs are never cut.
    for command in (["accounts", "show", "acct-alpha"], ["keys", "list"]):
        shown = run(*command, "--store", store, env={"COLUMNS": "40"}).stdout
        assert kept.key_id in shown and gone.key_id in shown, shown

    accounts.set_tier("acct-alpha", "block")
    blocked = json.loads(run("accounts", "show", "acct-alpha", "--store", store, "--json").stdout)
    assert blocked["in_effect"] == {} and blocked["tier_reason"] is None
    assert_user_error(run("accounts", "show", "nobody", "--store", store), "no account 'nobody'")
