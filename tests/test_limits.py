"""The limiter's semantics, run against both backends (Redis is a real private server).

Times are explicit (`now=`) except where real time is the point, so nothing sleeps.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from distillguard.gateway.limits import (
    Charge,
    Decision,
    Limiter,
    MemoryLimiter,
    Rate,
    RedisLimiter,
    Slot,
)

T0 = 1000.0


def _no_clock() -> float:
    raise AssertionError("this test passes now= explicitly")


def _make(kind: str, request: pytest.FixtureRequest, *, fake_time: bool) -> Limiter:
    if kind == "memory":
        return MemoryLimiter(clock=_no_clock) if fake_time else MemoryLimiter()
    url = request.getfixturevalue("redis_server")
    # Fake times are unrelated to real time: keep keys long enough that Redis cannot expire them.
    return RedisLimiter(url, prefix=f"t{uuid.uuid4().hex}:", ttl_slack=3600 if fake_time else 1)


@pytest_asyncio.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[Limiter]:
    lim = _make(request.param, request, fake_time=True)
    yield lim
    await lim.close()


@pytest_asyncio.fixture(params=["memory", "redis"])
async def real_limiter(request: pytest.FixtureRequest) -> AsyncIterator[Limiter]:
    lim = _make(request.param, request, fake_time=False)
    yield lim
    await lim.close()


@pytest_asyncio.fixture
async def redis_limiter(redis_server: str) -> AsyncIterator[RedisLimiter]:
    lim = RedisLimiter(redis_server, prefix=f"t{uuid.uuid4().hex}:")
    yield lim
    await lim.close()


def state(decision: Decision, key: str) -> tuple[int, float]:
    bucket = next(b for b in decision.buckets if b.key == key)
    return bucket.remaining, bucket.reset_after


@pytest.mark.asyncio
async def test_burst_of_exactly_limit_then_refused(limiter: Limiter) -> None:
    rate = Rate(5, 10.0)
    decisions = [await limiter.admit([Charge("k", rate, 1)], now=T0) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [state(d, "k")[0] for d in decisions] == [4, 3, 2, 1, 0, 0]
    refused = decisions[-1]
    assert refused.refused_by == "k" and refused.lease is None
    assert refused.retry_after == pytest.approx(2.0)


@pytest.mark.asyncio
async def test_refills_one_unit_per_emission_interval(limiter: Limiter) -> None:
    rate = Rate(3, 1.0)  # T = 333333.33µs: not a whole number of microseconds
    one = [Charge("k", rate, 1)]
    for _ in range(3):
        assert (await limiter.admit(one, now=T0)).allowed
    early = await limiter.admit(one, now=T0 + 0.333333)
    assert not early.allowed
    assert early.retry_after == pytest.approx(1 / 3 - 0.333333, abs=1e-9)
    assert (await limiter.admit(one, now=T0 + 0.333334)).allowed
    assert not (await limiter.admit(one, now=T0 + 0.4)).allowed
    assert (await limiter.admit(one, now=T0 + 0.666667)).allowed


@pytest.mark.asyncio
async def test_refusal_consumes_nothing(limiter: Limiter) -> None:
    key, org = Charge("key", Rate(5, 60.0), 1), Charge("org", Rate(1, 60.0), 1)
    assert (await limiter.admit([key, org], now=T0)).allowed
    refused = await limiter.admit([key, org], now=T0)
    assert not refused.allowed and refused.refused_by == "org"
    assert state(refused, "key")[0] == 4  # reported as it stands, not as if consumed
    assert state(await limiter.admit([key], now=T0), "key")[0] == 3

    slot = Slot("conc", 1)
    assert (await limiter.admit([], [slot], now=T0)).allowed
    by_slot = await limiter.admit([key], [slot], now=T0)
    assert not by_slot.allowed and by_slot.refused_by == "conc"
    assert by_slot.retry_after == 0.0 and by_slot.lease is None
    assert state(await limiter.admit([key], now=T0), "key")[0] == 2


@pytest.mark.asyncio
async def test_cost_above_limit_never_fits(limiter: Limiter) -> None:
    small, huge = Charge("a", Rate(10, 60.0), 2), Charge("b", Rate(10, 60.0), 11)
    decision = await limiter.admit([small, huge], now=T0)
    assert not decision.allowed and decision.refused_by == "b"
    assert math.isinf(decision.retry_after)
    assert state(decision, "a") == (10, 0.0)
    assert state(await limiter.admit([small], now=T0), "a")[0] == 8


@pytest.mark.asyncio
async def test_retry_after_waits_for_every_refusing_bucket(limiter: Limiter) -> None:
    fast, slow = Charge("fast", Rate(1, 1.0), 1), Charge("slow", Rate(1, 10.0), 1)
    assert (await limiter.admit([fast, slow], now=T0)).allowed
    decision = await limiter.admit([fast, slow], now=T0)
    assert decision.refused_by == "fast"
    assert decision.retry_after == pytest.approx(10.0)


@pytest.mark.asyncio
async def test_reservation_then_refund_restores_capacity(limiter: Limiter) -> None:
    rate = Rate(1000, 60.0)  # T = 60ms per token
    reserved = await limiter.admit([Charge("tpm", rate, 800)], now=T0)
    assert state(reserved, "tpm") == (200, pytest.approx(48.0))
    refused = await limiter.admit([Charge("tpm", rate, 500)], now=T0)
    assert not refused.allowed and refused.retry_after == pytest.approx(18.0)

    await limiter.settle([Charge("tpm", rate, -600)], now=T0)  # only 200 tokens were used
    assert state(await limiter.admit([Charge("tpm", rate, 500)], now=T0), "tpm")[0] == 300

    await limiter.settle([Charge("tpm", rate, -5000)], now=T0)  # never below empty
    assert state(await limiter.admit([Charge("tpm", rate, 0)], now=T0), "tpm") == (1000, 0.0)


@pytest.mark.asyncio
async def test_underestimate_becomes_debt(limiter: Limiter) -> None:
    rate = Rate(100, 10.0)  # T = 0.1s
    assert (await limiter.admit([Charge("k", rate, 100)], now=T0)).allowed
    await limiter.settle([Charge("k", rate, 50)], now=T0)
    free = await limiter.admit([Charge("k", rate, 0)], now=T0)
    assert free.allowed and state(free, "k") == (0, pytest.approx(15.0))
    late = await limiter.admit([Charge("k", rate, 1)], now=T0 + 5)
    assert not late.allowed and late.retry_after == pytest.approx(0.1)
    assert (await limiter.admit([Charge("k", rate, 1)], now=T0 + 5.1)).allowed


@pytest.mark.asyncio
async def test_header_state_drains_with_time(limiter: Limiter) -> None:
    rate = Rate(10, 60.0)  # T = 6s
    assert state(await limiter.admit([Charge("k", rate, 3)], now=T0), "k") == (7, 18.0)
    probe = [Charge("k", rate, 0)]
    assert state(await limiter.admit(probe, now=T0 + 6), "k") == (8, 12.0)
    assert state(await limiter.admit(probe, now=T0 + 100), "k") == (10, 0.0)


@pytest.mark.asyncio
async def test_changed_rate_keeps_the_arrival_time(limiter: Limiter) -> None:
    assert (await limiter.admit([Charge("k", Rate(10, 60.0), 5)], now=T0)).allowed  # 30s
    doubled = await limiter.admit([Charge("k", Rate(20, 60.0), 0)], now=T0)
    assert state(doubled, "k") == (10, pytest.approx(30.0))


@pytest.mark.asyncio
async def test_concurrency_slots_lease_release_and_expire(limiter: Limiter) -> None:
    key, org = Slot("key", 2), Slot("org", 3)
    first = await limiter.admit([], [key, org], lease_ttl=5, now=T0)
    second = await limiter.admit([], [key, org], lease_ttl=5, now=T0 + 1)
    assert first.lease and second.lease and first.lease != second.lease
    third = await limiter.admit([], [key, org], lease_ttl=5, now=T0 + 1)
    assert not third.allowed and third.refused_by == "key" and third.lease is None
    assert await limiter.in_flight("org", now=T0 + 1) == 2

    await limiter.settle([], [key, org], first.lease, now=T0 + 2)
    assert await limiter.in_flight("key", now=T0 + 2) == 1
    assert await limiter.in_flight("org", now=T0 + 2) == 1
    assert (await limiter.admit([], [key], lease_ttl=5, now=T0 + 2)).allowed

    # A crashed replica never releases: its leases lapse at expiry (now + lease_ttl).
    assert await limiter.in_flight("key", now=T0 + 5.999999) == 2
    assert await limiter.in_flight("key", now=T0 + 6) == 1
    assert await limiter.in_flight("key", now=T0 + 7) == 0
    assert (await limiter.admit([], [key, org], now=T0 + 7)).allowed


@pytest.mark.asyncio
async def test_settle_releases_lease_and_adjusts_in_one_call(limiter: Limiter) -> None:
    rate, slot = Rate(100, 60.0), Slot("conc", 1)
    held = await limiter.admit([Charge("tpm", rate, 60)], [slot], now=T0)
    await limiter.settle([Charge("tpm", rate, -50)], [slot], held.lease, now=T0)
    after = await limiter.admit([Charge("tpm", rate, 0)], [slot], now=T0)
    assert after.allowed and state(after, "tpm")[0] == 90


@pytest.mark.asyncio
async def test_ambiguous_requests_are_rejected(limiter: Limiter) -> None:
    rate = Rate(5, 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        await limiter.admit([Charge("k", rate, -1)], now=T0)
    with pytest.raises(ValueError, match="once"):
        await limiter.admit([Charge("k", rate, 1), Charge("k", rate, 1)], now=T0)
    with pytest.raises(ValueError, match="once"):
        await limiter.admit([], [Slot("s", 1), Slot("s", 2)], now=T0)
    with pytest.raises(ValueError):
        Rate(0, 1.0)
    with pytest.raises(ValueError):
        Rate(1, 0.0)


@pytest.mark.asyncio
async def test_real_clock_refills(real_limiter: Limiter) -> None:
    one = [Charge("k", Rate(2, 0.2), 1)]
    assert (await real_limiter.admit(one)).allowed
    assert (await real_limiter.admit(one)).allowed
    refused = await real_limiter.admit(one)
    assert not refused.allowed and 0 < refused.retry_after <= 0.1
    await asyncio.sleep(refused.retry_after + 0.01)
    assert (await real_limiter.admit(one)).allowed


@pytest.mark.asyncio
async def test_concurrent_admits_on_redis_admit_exactly_limit(
    redis_limiter: RedisLimiter,
) -> None:
    charge, slot = Charge("k", Rate(10, 3600.0), 1), Slot("conc", 25)
    decisions = await asyncio.gather(*(redis_limiter.admit([charge]) for _ in range(60)))
    assert sum(d.allowed for d in decisions) == 10
    leases = await asyncio.gather(*(redis_limiter.admit([], [slot]) for _ in range(60)))
    assert sum(d.allowed for d in leases) == 25
    assert await redis_limiter.in_flight("conc") == 25


@pytest.mark.asyncio
async def test_redis_reloads_a_flushed_script(redis_server: str) -> None:
    client = Redis.from_url(redis_server)
    lim = RedisLimiter(client, prefix=f"t{uuid.uuid4().hex}:")
    one = [Charge("k", Rate(2, 60.0), 1)]
    assert (await lim.admit(one)).allowed
    await client.script_flush()
    assert (await lim.admit(one)).allowed
    await lim.close()  # the caller's client stays open
    assert await client.ping()
    await client.aclose()


@pytest.mark.asyncio
async def test_redis_keys_expire_once_they_hold_nothing(redis_server: str) -> None:
    prefix = f"t{uuid.uuid4().hex}:"
    client = Redis.from_url(redis_server)
    lim = RedisLimiter(client, prefix=prefix, ttl_slack=0.5)
    rate = Rate(10, 60.0)
    await lim.admit([Charge("k", rate, 3)], [Slot("conc", 2)], lease_ttl=30)
    assert 18_000 < await client.pttl(prefix + "b:k") <= 18_500  # full again in 18s
    assert 30_000 < await client.pttl(prefix + "s:conc") <= 30_500
    await lim.settle([Charge("k", rate, -3)])
    assert not await client.exists(prefix + "b:k")  # empty bucket: nothing stored
    await client.aclose()


# Parity: a random history must get the same decisions from both backends.

BUCKETS = {
    "a": (Rate(3, 1.0), Rate(5, 1.0)),  # two rates for one key: rescaling must agree too
    "b": (Rate(7, 1.0),),
    "c": (Rate(1000, 60.0),),
    "d": (Rate(2, 0.7),),
}
SLOTS = {"s1": Slot("s1", 2), "s2": Slot("s2", 1)}

charge_st = st.builds(
    lambda key, which, cost: Charge(key, BUCKETS[key][which % len(BUCKETS[key])], cost),
    st.sampled_from(sorted(BUCKETS)),
    st.integers(0, 1),
    st.one_of(st.integers(0, 3), st.integers(-4, 8), st.integers(-1200, 1200)),
)
op_st = st.tuples(
    st.one_of(st.just(0), st.integers(0, 300_000), st.integers(0, 3_000_000)),  # µs since last
    st.sampled_from(["admit", "admit", "settle", "release"]),
    st.lists(charge_st, max_size=3, unique_by=lambda c: c.key),
    st.lists(st.sampled_from(sorted(SLOTS)), max_size=2, unique=True),
    st.sampled_from([0.5, 2.0]),
)


async def _replay(client: Redis, ops: list) -> None:
    mem = MemoryLimiter(clock=_no_clock)
    red = RedisLimiter(client, prefix=f"p{uuid.uuid4().hex}:", ttl_slack=3600)
    t_us = 1_700_000_000_000_000  # epoch-sized times, as Redis TIME gives
    held: list[tuple[tuple[Slot, ...], str, str]] = []
    for dt, kind, charges, slot_keys, ttl in ops:
        t_us += dt
        now = t_us / 1e6
        slots = tuple(SLOTS[k] for k in slot_keys)
        if kind == "admit":
            charges = [Charge(c.key, c.rate, abs(c.cost)) for c in charges]
            m = await mem.admit(charges, slots, lease_ttl=ttl, now=now)
            r = await red.admit(charges, slots, lease_ttl=ttl, now=now)
            assert (m.allowed, m.retry_after, m.refused_by, m.buckets) == (
                r.allowed,
                r.retry_after,
                r.refused_by,
                r.buckets,
            )
            assert (m.lease is None) == (r.lease is None)
            if m.lease and r.lease:
                held.append((slots, m.lease, r.lease))
        elif kind == "settle":
            await mem.settle(charges, now=now)
            await red.settle(charges, now=now)
        elif held:
            slots, m_lease, r_lease = held.pop(dt % len(held))
            await mem.settle(charges, slots, m_lease, now=now)
            await red.settle(charges, slots, r_lease, now=now)
        for key in SLOTS:
            assert await mem.in_flight(key, now=now) == await red.in_flight(key, now=now)


def test_memory_and_redis_decide_identically(redis_server: str) -> None:
    with asyncio.Runner() as runner:
        client = Redis.from_url(redis_server)

        @settings(
            max_examples=200,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(st.lists(op_st, min_size=5, max_size=40))
        def check(ops: list) -> None:
            runner.run(_replay(client, ops))

        check()
        runner.run(client.aclose())
