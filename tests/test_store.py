"""The store on both databases it supports: SQLite (default) and a real PostgreSQL server."""

from __future__ import annotations

import time

import pytest

from distillguard.gateway.policy import Limits
from distillguard.store import AccountError, AccountStore, Event, EventStore, open_engine


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("postgres_server")
    engine = open_engine(url)
    yield engine
    if request.param == "postgresql":  # one server per session: leave it empty
        from distillguard.store.schema import metadata

        metadata.drop_all(engine)
    engine.dispose()


def test_keys_carry_their_account_tier_and_limits(engine):
    accounts = AccountStore(engine)
    first = accounts.issue_key("acct", "org", Limits(rpm=5))
    accounts.set_tier("acct", "throttle", "bulk harvesting")
    second = accounts.issue_key("acct")
    assert second.record.tier == "throttle" and second.record.org_id == "org"
    assert first.record.limits == Limits(rpm=5)
    assert first.record.matches(first.api_key.split("-", 2)[2])
    assert not first.record.matches("wrong")
    accounts.revoke_key(first.record.key_id)
    assert set(accounts.active_keys()) == {second.record.key_id}
    assert [k.key_id for k in accounts.list_keys()] == [first.record.key_id, second.record.key_id]
    with pytest.raises(AccountError, match="belongs to organisation"):
        accounts.issue_key("acct", "other-org")
    with pytest.raises(AccountError, match="unknown tier"):
        accounts.set_tier("acct", "sideways")


def test_events_round_trip_in_order_with_json_requests(engine):
    events = EventStore(engine)
    now = time.time()
    batch = [
        Event(
            ts=now + i,
            request_id=f"r{i}",
            endpoint="/chat/completions",
            status=200,
            latency_ms=1.5,
            decision="admitted",
            account_id=f"a{i % 2}",
            request={"messages": [{"role": "user", "content": f"q{i}"}], "n": 1},
        )
        for i in range(5)
    ]
    events.write(batch)
    rows = list(events.read(chunk=2))
    assert [r["request_id"] for r in rows] == [f"r{i}" for i in range(5)]
    assert rows[3]["request"] == {"messages": [{"role": "user", "content": "q3"}], "n": 1}
    assert [r["request_id"] for r in events.read(account_id="a1")] == ["r1", "r3"]
    assert [r["request_id"] for r in events.read(since=now + 3)] == ["r3", "r4"]
