"""Attacks on a real gateway that once worked, each reproduced and shown to fail to hurt.

Every test runs `distillguard serve` in front of the fake upstream (and, where it
matters, a private Redis it can lose) and reads what the gateway stored afterwards.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time

import httpx
import pytest

from distillguard.policy import Limits
from distillguard.store import AccountStore, EventStore, open_engine
from tests import servers
from tests.gateway_stack import gateway

CHAT = b'{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}'
ADMIN = "an-admin-token-long-enough-for-the-gateway"


@pytest.fixture
def store(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


def issue(store: str, account: str, **limits) -> str:
    return AccountStore(open_engine(store)).issue_key(account, "org-" + account, Limits(**limits))


def post(url: str, key: str | None, content: bytes = CHAT, **headers) -> httpx.Response:
    headers = {"content-type": "application/json", **headers}
    if key:
        headers["authorization"] = f"Bearer {key}"
    return httpx.post(url + "/chat/completions", content=content, headers=headers, timeout=30)


def events(store: str) -> dict[str, dict]:
    return {row["request_id"]: row for row in EventStore(open_engine(store)).read()}


def nested(depth: int, inner: str = "\\u0000") -> bytes:
    content = "[" * depth + f'"{inner}"' + "]" * depth
    return (
        f'{{"model": "fake-model", "messages": [{{"role": "user", "content": "hi"}}], '
        f'"metadata": {content}}}'
    ).encode()


def healthz(stack) -> httpx.Response:
    return httpx.get(stack.url.removesuffix("/v1") + "/healthz", timeout=5)


# -- one request must not switch the event log off -------------------------------------------


def test_deep_nesting_is_refused_and_the_event_log_keeps_writing(upstream, store):
    key = issue(store, "nester").api_key
    with gateway(upstream, store, env={"DISTILLGUARD_GATEWAY__MAX_BODY_BYTES": "1048576"}) as stack:
        time.sleep(0.5)
        allowed = post(stack.url, key, nested(300))  # deep, with a NUL inside: sanitised
        assert allowed.status_code == 200, allowed.text
        refused = [post(stack.url, key, nested(depth)) for depth in (600, 975, 5000, 200_000)]
        later = post(stack.url, key)
        assert later.status_code == 200
        assert healthz(stack).status_code == 200
        exposition = httpx.get(stack.url.removesuffix("/v1") + "/metrics").text
    for response in refused:
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "nesting_too_deep"
    stored = events(store)
    ids = [r.headers["x-request-id"] for r in (allowed, *refused, later)]
    assert set(ids) <= set(stored)  # every request, the refused ones and the later one
    assert "\x00" not in json.dumps(stored[ids[0]]["request"])
    assert "distillguard_event_writer_alive 1.0" in exposition


def test_writer_survives_any_failure_and_counts_what_it_lost(tmp_path):
    from distillguard import metrics
    from distillguard.gateway.events import EventSink
    from distillguard.store import Event

    class FailsOnce(EventStore):  # a fault no database error class covers
        failed = False

        def write(self, batch):
            if not self.failed and any(e.request_id == "poison" for e in batch):
                self.failed = True
                raise RecursionError("maximum recursion depth exceeded")
            super().write(batch)

    url = f"sqlite:///{tmp_path / 'events.db'}"
    sink = EventSink(FailsOnce(open_engine(url)), linger_seconds=0.0)
    dropped = metrics.EVENTS_DROPPED._value.get()
    sink.start()

    def event(request_id: str) -> Event:
        return Event(time.time(), request_id, "/chat/completions", 200, 1.0, "admitted")

    sink.emit(event("poison"))
    time.sleep(0.3)
    sink.emit(event("after"))
    sink.close()
    assert metrics.EVENTS_DROPPED._value.get() == dropped + 1
    assert [row["request_id"] for row in EventStore(open_engine(url)).read()] == ["after"]


def test_healthz_fails_while_the_event_writer_is_not_running(upstream, tmp_path):
    from distillguard.config import GatewaySettings, Settings
    from distillguard.gateway.server import build

    settings = Settings(
        gateway=GatewaySettings(upstream=upstream, store=f"sqlite:///{tmp_path / 's.db'}")
    )
    app = build(settings)  # no lifespan run: the writer never started

    async def probe() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.get("/healthz")

    import asyncio

    response = asyncio.run(probe())
    assert response.status_code == 503
    assert response.json() == {"status": "event writer stopped"}


# -- nobody fills the disk for free ------------------------------------------------------------


def test_header_flood_is_431_and_unauthenticated_events_are_small_and_sampled(upstream, store):
    env = {"DISTILLGUARD_GATEWAY__UNAUTHENTICATED_EVENTS_PER_SECOND": "5"}
    with gateway(upstream, store, env=env) as stack:
        huge = post(stack.url, None, **{"user-agent": "x" * (2 << 20)})
        assert huge.status_code == 431
        assert huge.json()["error"]["code"] == "headers_too_large"
        started = time.monotonic()
        answers = [post(stack.url, "dg-bogus", **{"user-agent": "y" * 12_000}) for _ in range(60)]
        elapsed = time.monotonic() - started
    assert {a.status_code for a in answers} == {401}
    stored = [e for e in events(store).values() if e["status"] == 401]
    # A burst of 5, then 5 a second: far fewer than the 60 requests.
    assert 5 <= len(stored) <= 5 + 5 * elapsed + 1, (len(stored), elapsed)
    assert all(len(e["user_agent"]) <= 512 for e in stored)
    assert any("unauthenticated requests not stored" in (e["error"] or "") for e in stored)


def test_refused_requests_keep_only_a_bounded_summary_of_their_body(upstream, store):
    key = issue(store, "refused", rpm=1).api_key
    big = (
        b'{"model": "fake-model", "messages": [{"role": "user", "content": "'
        + b"z" * 3500
        + b'"}]}'
    )
    with gateway(upstream, store) as stack:
        time.sleep(0.5)
        first = post(stack.url, key, big)
        refused = [post(stack.url, key, big) for _ in range(3)]
    assert first.status_code == 200
    assert {r.status_code for r in refused} == {429}
    stored = events(store)
    assert stored[first.headers["x-request-id"]]["request"]["messages"][0]["content"].count("z")
    for response in refused:
        summary = stored[response.headers["x-request-id"]]["request"]
        assert summary["truncated"] is True and summary["bytes"] == len(big)
        assert len(summary["head"]) == 2048 and len(summary["sha256"]) == 64


def test_event_queue_is_bounded_by_bytes_while_the_store_stalls(tmp_path):
    from distillguard.gateway.events import EventSink
    from distillguard.store import Event

    release = threading.Event()

    class Stalled(EventStore):
        def write(self, batch):
            release.wait(30)
            super().write(batch)

    url = f"sqlite:///{tmp_path / 'events.db'}"
    sink = EventSink(Stalled(open_engine(url)), max_bytes=8 << 20, linger_seconds=0.0)
    sink.start()
    taken = [
        sink.emit(Event(time.time(), f"r{i}", "/chat/completions", 200, 1.0, "admitted"), 1 << 20)
        for i in range(40)
    ]
    assert sink.queued_bytes <= 8 << 20
    assert 7 <= sum(taken) <= 9  # the batch the writer holds, plus what fits in 8 MiB
    release.set()
    sink.close()
    assert len(list(EventStore(open_engine(url)).read())) == sum(taken)
    assert sink.queued_bytes == 0


# -- the limiter's store down: 503s with events, never 500s -------------------------------------


@contextlib.contextmanager
def losing_redis(upstream: str, store: str, env: dict | None = None):
    """A gateway on a private Redis; yields (stack, stop, restart) to take Redis away."""
    port = servers.free_port()
    redis = servers.redis_server(port)
    url = redis.__enter__()
    held = {"redis": redis}

    def stop() -> None:
        held.pop("redis").__exit__(None, None, None)

    def restart() -> None:
        held["redis"] = servers.redis_server(port)
        held["redis"].__enter__()

    try:
        with gateway(upstream, store, "--redis", url, env=env) as stack:
            time.sleep(0.5)
            yield stack, stop, restart
    finally:
        if "redis" in held:
            held["redis"].__exit__(None, None, None)


def test_redis_outage_gives_503s_with_events_then_recovers(upstream, store):
    key = issue(store, "outage").api_key
    with losing_redis(upstream, store) as (stack, stop, restart):
        assert post(stack.url, key).status_code == 200
        stop()
        during = [post(stack.url, key) for _ in range(30)]
        restart()
        after = post(stack.url, key)
    stderr = stack.process.stderr.read()
    assert after.status_code == 200, after.text
    stored = events(store)
    for response in during:
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "limiter_unavailable"
        assert response.headers["retry-after"] == "1"
        event = stored[response.headers["x-request-id"]]
        assert (event["status"], event["decision"]) == (503, "error")
    assert stderr.count("Traceback") == 0 and stderr.count("\n") < 10, stderr[-3000:]


def test_redis_outage_fails_open_to_local_limits_when_configured(upstream, store):
    key = issue(store, "open", rpm=5).api_key
    env = {"DISTILLGUARD_GATEWAY__LIMITER_FAIL_OPEN": "true"}
    with losing_redis(upstream, store, env) as (stack, stop, _):
        stop()
        during = [post(stack.url, key).status_code for _ in range(8)]
    assert during == [200] * 5 + [429] * 3  # the account's own limits, held in-process


# -- a shutdown, a stream or an upstream must not leak a slot or lose an event ------------------


@pytest.mark.parametrize("limiter", ["memory", "redis"])
def test_sigterm_with_streams_past_the_deadline_loses_no_event_and_no_lease(
    upstream, store, limiter, request
):
    key = issue(store, "streamer", concurrency=4).api_key
    extra = ["--redis", request.getfixturevalue("redis_server")] if limiter == "redis" else []
    env = {"DISTILLGUARD_GATEWAY__SHUTDOWN_GRACE_SECONDS": "1"}
    body = CHAT.replace(b"fake-model", b"slow-2").replace(b"}]}", b'}], "stream": true}')
    ids: list[str] = []
    texts: list[str] = []

    def stream(url: str) -> None:
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        with (
            contextlib.suppress(httpx.HTTPError),
            httpx.stream("POST", url + "/chat/completions", content=body, headers=headers) as r,
        ):
            ids.append(r.headers["x-request-id"])
            texts.append("".join(r.iter_text()))

    with gateway(upstream, store, *extra, env=env) as stack:
        time.sleep(0.5)
        threads = [threading.Thread(target=stream, args=(stack.url,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 15
        while len(ids) < 4 and time.monotonic() < deadline:  # all four are streaming
            time.sleep(0.05)
        stack.process.send_signal(signal.SIGTERM)
        stack.process.wait(timeout=30)
        for thread in threads:
            thread.join(10)
    stored = events(store)
    assert len(ids) == 4 and all(i in stored for i in ids), (ids, sorted(stored))
    assert {(stored[i]["status"], stored[i]["error"]) for i in ids} == {
        (503, "cancelled at shutdown")
    }
    assert all("shutting_down" in text and text.endswith("[DONE]\n\n") for text in texts[:4])
    assert "Traceback" not in stack.process.stderr.read()
    with gateway(upstream, store, *extra) as again:  # every lease came back: 4 slots free
        time.sleep(0.5)
        held = [threading.Thread(target=stream, args=(again.url,)) for _ in range(4)]
        for thread in held:
            thread.start()
        deadline = time.monotonic() + 15
        while len(ids) < 8 and time.monotonic() < deadline:  # the new four hold the slots
            time.sleep(0.05)
        fifth = post(again.url, key)
        for thread in held:
            thread.join(30)
    assert fifth.status_code == 429  # the limit is 4: exactly the new four hold it
    assert "concurrent requests" in fifth.json()["error"]["message"], fifth.text


def test_non_integer_usage_from_the_upstream_still_releases_the_slot(upstream, store):
    key = issue(store, "odd-usage", concurrency=1).api_key
    with gateway(upstream, store) as stack:
        time.sleep(0.5)
        odd = CHAT.replace(b"fake-model", b"bad-usage")
        first = post(stack.url, key, odd)
        second = post(stack.url, key, odd)
        streamed = post(stack.url, key, odd.replace(b"}]}", b'}], "stream": true}'))
        third = post(stack.url, key, odd)
    assert [r.status_code for r in (first, second, streamed, third)] == [200] * 4
    event = events(store)[first.headers["x-request-id"]]
    assert event["completion_tokens"] > 0 and event["prompt_tokens"] > 0


def test_a_stream_longer_than_its_limit_is_cut_and_its_slot_released(upstream, store):
    key = issue(store, "long-stream", concurrency=1).api_key
    env = {"DISTILLGUARD_GATEWAY__MAX_STREAM_SECONDS": "1.5"}
    body = CHAT.replace(b"fake-model", b"slow-1").replace(b"}]}", b'}], "stream": true}')
    with gateway(upstream, store, env=env) as stack:
        time.sleep(0.5)
        started = time.monotonic()
        cut = post(stack.url, key, body)
        elapsed = time.monotonic() - started
        after = post(stack.url, key)
    assert cut.status_code == 200 and 1.4 < elapsed < 4
    assert "stream_too_long" in cut.text and cut.text.endswith("data: [DONE]\n\n")
    assert after.status_code == 200
    event = events(store)[cut.headers["x-request-id"]]
    assert (event["status"], event["error"]) == (504, "too_long")


# -- who the client is, and who may read the metrics ---------------------------------------------


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(upstream, store, tmp_path):
    key = issue(store, "proxied").api_key
    spoof = {"x-forwarded-for": "203.0.113.7"}
    with gateway(upstream, store) as stack:
        time.sleep(0.5)
        untrusted = post(stack.url, key, **spoof)
    env = {"DISTILLGUARD_GATEWAY__TRUSTED_PROXIES": '["127.0.0.0/8"]'}
    with gateway(upstream, store, env=env) as stack:
        time.sleep(0.5)
        trusted = post(stack.url, key, **spoof)
        chained = post(stack.url, key, **{"x-forwarded-for": "198.51.100.9, 127.0.0.5"})
        garbage = post(stack.url, key, **{"x-forwarded-for": "<script>, 10.0.0.1'--"})
    stored = events(store)

    def ip(response: httpx.Response) -> str:
        return stored[response.headers["x-request-id"]]["client_ip"]

    assert ip(untrusted) == "127.0.0.1"
    assert ip(trusted) == "203.0.113.7"
    assert ip(chained) == "198.51.100.9"
    assert ip(garbage) == "127.0.0.1"


def test_metrics_need_the_admin_token_when_one_is_set(upstream, store):
    env = {"DISTILLGUARD_GATEWAY__ADMIN_TOKEN": ADMIN}
    with gateway(upstream, store, env=env) as stack:
        url = stack.url.removesuffix("/v1") + "/metrics"
        anonymous = httpx.get(url)
        wrong = httpx.get(url, headers={"authorization": "Bearer " + ADMIN[:-1]})
        right = httpx.get(url, headers={"authorization": "Bearer " + ADMIN})
    assert anonymous.status_code == wrong.status_code == 401
    assert right.status_code == 200 and "distillguard_requests" in right.text
