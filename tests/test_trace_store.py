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
from tests.helpers import run

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
