"""The store on both databases it supports: SQLite (default) and a real PostgreSQL server."""

from __future__ import annotations

import time

import pytest

from distillguard.policy import Limits
from distillguard.store import AccountError, AccountStore, Event, EventStore, open_engine
from distillguard.store.schema import metadata


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("postgres_server")
    engine = open_engine(url)
    if request.param == "postgresql":  # one server per session, shared: start from empty
        metadata.drop_all(engine)
        metadata.create_all(engine)
    yield engine
    if request.param == "postgresql":
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


def test_every_tier_change_is_audited_with_who_and_why(engine):
    accounts = AccountStore(engine)
    accounts.issue_key("harvester")
    accounts.issue_key("bystander")
    changed = accounts.raise_tiers(
        {"harvester": ("throttle", "score 0.97"), "bystander": ("normal", "nothing"),
         "stranger": ("block", "not ours")},
        actor="trace run",
    )  # fmt: skip
    assert changed == {"harvester": "throttle"}
    accounts.set_tier("harvester", "block", "confirmed", actor="console 10.0.0.7")
    assert accounts.raise_tiers({"harvester": ("watch", "lower")}, actor="online tracing") == {}
    accounts.set_tier("harvester", "normal", "false positive: licensed", actor="cli")
    history = [
        (c["old_tier"], c["new_tier"], c["actor"], c["reason"])
        for c in accounts.tier_history("harvester")
    ]
    assert history == [
        ("block", "normal", "cli", "false positive: licensed"),
        ("throttle", "block", "console 10.0.0.7", "confirmed"),
        ("normal", "throttle", "trace run", "score 0.97"),
    ]
    assert accounts.tier_history("bystander") == []
    assert accounts.tier_counts() == {"normal": 2, "watch": 0, "throttle": 0, "block": 0}
    with pytest.raises(AccountError, match="no account"):
        accounts.set_tier("stranger", "block", actor="cli")
    assert len(accounts.tier_history()) == 3  # a refused change leaves no trail


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


def event(request_id: str | None, **fields) -> Event:
    base = dict(ts=time.time(), endpoint="/chat/completions", status=200, latency_ms=1.0)
    return Event(request_id=request_id, decision="admitted", **{**base, **fields})  # type: ignore[arg-type]


def test_whatever_a_client_sends_is_stored_without_failing_the_batch(engine):
    """NUL characters, over-long strings and huge numbers are made to fit, on both databases."""
    events = EventStore(engine)
    odd = event(
        "odd",
        model="m" * 1000,
        user_agent="agent\x00with NUL",
        request={"messages": [{"role": "user", "content": "nul \x00 here"}], "k\x00": 1},
        response_text="answer \x00",
        completion_tokens=2**40,
    )
    events.write([event("before"), odd, event("after")])
    rows = {r["request_id"]: r for r in events.read()}
    assert set(rows) == {"before", "odd", "after"}
    stored = rows["odd"]
    assert stored["model"] == "m" * 256
    assert stored["user_agent"] == "agent\ufffdwith NUL"
    assert stored["request"] == {
        "messages": [{"role": "user", "content": "nul \ufffd here"}],
        "k\ufffd": 1,
    }
    assert stored["response_text"] == "answer \ufffd"
    assert stored["completion_tokens"] == 2**31 - 1


def test_a_row_the_database_refuses_is_dropped_alone(engine):
    """The sink isolates a refused row instead of retrying its whole batch forever."""
    from distillguard import metrics
    from distillguard.gateway.events import EventSink

    sink = EventSink(EventStore(engine), batch_size=10)
    dropped = metrics.EVENTS_DROPPED._value.get()
    sink.start()
    for item in (event("kept-1"), event(None), event("kept-2")):  # request_id is NOT NULL
        sink.emit(item)
    sink.close()  # drains the queue: returns only once every event is written or dropped
    assert [r["request_id"] for r in EventStore(engine).read()] == ["kept-1", "kept-2"]
    assert metrics.EVENTS_DROPPED._value.get() == dropped + 1
