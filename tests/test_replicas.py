"""Scaled out: three `distillguard serve` processes sharing one Redis and one PostgreSQL.

The limits must hold exactly across replicas (a burst spread over all three
admits exactly the limit), and concurrency slots must come back however a
request ends: finished, cancelled by the client, timed out or failed upstream.
This is also the README's scaled-out deployment, run as written there.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from distillguard.gateway.limits import RedisLimiter
from distillguard.policy import Limits
from distillguard.store import AccountStore, EventStore, open_engine
from distillguard.watermark import WatermarkKey
from distillguard.watermark.cohorts import Cohorts
from tests.gateway_stack import gateway

REPLICAS = 3
EXAMPLE_CONFIG = Path(__file__).parents[1] / "examples" / "scaled-out" / "distillguard.toml"


@pytest.fixture(scope="module")
def key_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("replicas") / "watermark-key.json"
    WatermarkKey.generate().save(path)
    return path


@pytest.fixture(scope="module")
def example_env(redis_server, key_file) -> dict[str, str]:
    """The README's example configuration, with loopback servers for its URLs."""
    return {
        "DISTILLGUARD_CONFIG": str(EXAMPLE_CONFIG),
        "DISTILLGUARD_GATEWAY__HOST": "127.0.0.1",
        "DISTILLGUARD_GATEWAY__REDIS": redis_server,
        "DISTILLGUARD_GATEWAY__WATERMARK_KEY": str(key_file),
    }


@pytest.fixture(scope="module")
def replicas(upstream, postgres_server, example_env):
    env = example_env
    with ExitStack() as stack:
        yield [
            stack.enter_context(gateway(upstream, postgres_server, env=env))
            for _ in range(REPLICAS)
        ]


@pytest.fixture(scope="module")
def accounts(postgres_server) -> AccountStore:
    return AccountStore(open_engine(postgres_server))


def issue(accounts: AccountStore, account: str, **limits) -> tuple[str, str]:
    issued = accounts.issue_key(account, f"org-{account}", Limits(**limits))
    time.sleep(0.6)  # every replica reloads keys every 0.2 s in these tests
    return issued.api_key, issued.record.key_id


def chat_body(model: str = "fake-model", stream: bool = False) -> dict:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Say something."}],
        "max_tokens": 16,
        "stream": stream,
    }


async def burst(replicas, api_key: str, count: int, model: str = "fake-model") -> Counter:
    """`count` requests at once, spread round-robin over the replicas; status counts."""
    headers = {"authorization": f"Bearer {api_key}"}
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(timeout=30, limits=limits, headers=headers) as http:
        responses = await asyncio.gather(
            *(
                http.post(
                    replicas[i % len(replicas)].url + "/chat/completions", json=chat_body(model)
                )
                for i in range(count)
            )
        )
    return Counter(r.status_code for r in responses)


@pytest.mark.asyncio
async def test_a_burst_over_three_replicas_admits_exactly_the_rpm_limit(replicas, accounts):
    api_key, _ = issue(accounts, "burst-rpm", rpm=25, concurrency=1000)
    statuses = await burst(replicas, api_key, 90)
    assert statuses == {200: 25, 429: 65}


@pytest.mark.asyncio
async def test_a_burst_over_three_replicas_admits_exactly_the_concurrency_limit(replicas, accounts):
    api_key, _ = issue(accounts, "burst-slots", concurrency=5)
    statuses = await burst(replicas, api_key, 30, model="slow-2")  # each holds its slot 2 s
    assert statuses == {200: 5, 429: 25}


@pytest.mark.asyncio
async def test_one_server_with_two_worker_processes_shares_its_limits_through_redis(
    upstream, postgres_server, example_env, accounts
):
    with gateway(upstream, postgres_server, "--workers", "2", env=example_env) as server:
        api_key, _ = issue(accounts, "two-workers", rpm=20, concurrency=1000)
        statuses = await burst([server], api_key, 60)
        assert server.stop() in (0, -signal.SIGTERM)
    assert statuses == {200: 20, 429: 40}


async def slots_in_use(redis_url: str, key_id: str, account: str) -> dict[str, int]:
    limiter = RedisLimiter(redis_url)
    try:
        names = [f"key:{key_id}", f"account:{account}", f"org:org-{account}"]
        return {name: await limiter.in_flight(f"{name}:concurrency") for name in names}
    finally:
        await limiter.close()


@pytest.mark.asyncio
async def test_slots_return_to_zero_after_cancelled_streams_timeouts_and_failures(
    replicas, accounts, redis_server, postgres_server, key_file
):
    account = "leaky"
    api_key, key_id = issue(accounts, account, concurrency=100)
    headers = {"authorization": f"Bearer {api_key}"}
    started = time.time()

    async with httpx.AsyncClient(timeout=30, headers=headers) as http:

        async def cancelled_stream(url: str) -> None:
            # Five chunks 1 s apart; the client reads the first and hangs up.
            request = http.build_request(
                "POST", url + "/chat/completions", json=chat_body("slow-1", stream=True)
            )
            response = await http.send(request, stream=True)
            assert response.status_code == 200
            lines = response.aiter_lines()
            assert (await anext(lines)).startswith("data: ")
            await asyncio.sleep(0.5)  # hold the slot while the test counts it
            await response.aclose()

        async def status_of(url: str, model: str, stream: bool = False) -> int:
            response = await http.post(url + "/chat/completions", json=chat_body(model, stream))
            return response.status_code

        urls = [r.url for r in replicas]
        cancelled = [asyncio.create_task(cancelled_stream(url)) for url in urls]
        timed_out = [asyncio.create_task(status_of(url, "slow-10")) for url in urls]
        await asyncio.sleep(0.3)
        held = await slots_in_use(redis_server, key_id, account)
        assert held[f"key:{key_id}"] == 2 * REPLICAS, held  # the probe really sees slots
        await asyncio.gather(*cancelled)
        failed = await asyncio.gather(
            *(status_of(url, "fail-500") for url in urls),
            *(status_of(url, "drop", stream=True) for url in urls),
        )
        assert await asyncio.gather(*timed_out) == [504] * REPLICAS  # upstream timeout is 3 s
        assert failed == [502] * REPLICAS + [200] * REPLICAS  # broken streams began as 200s

    deadline = time.monotonic() + 10
    while (held := await slots_in_use(redis_server, key_id, account)) != dict.fromkeys(held, 0):
        assert time.monotonic() < deadline, f"slots still held: {held}"
        await asyncio.sleep(0.2)

    # Each request left exactly one event, whichever replica served it; a stream
    # that the upstream broke after it began is recorded as the 502 it was.
    expected = {499: REPLICAS, 504: REPLICAS, 502: 2 * REPLICAS}
    events = EventStore(open_engine(postgres_server))
    deadline = time.monotonic() + 10
    while True:
        mine = list(events.read(since=started, account_id=account))
        if Counter(e["status"] for e in mine) == expected:
            break
        assert time.monotonic() < deadline, Counter(e["status"] for e in mine)
        await asyncio.sleep(0.2)
    cohort = Cohorts(WatermarkKey.load(key_file), 64).of(account)
    assert {e["cohort"] for e in mine} == {cohort}  # recorded for later attribution
