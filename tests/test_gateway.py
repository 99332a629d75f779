"""The gateway end to end: real `distillguard serve`, real fake-upstream server, openai SDK."""

from __future__ import annotations

import json
import signal
import threading
import time
from datetime import UTC, datetime, timedelta, timezone

import httpx
import openai
import pytest

from distillguard.policy import Limits
from distillguard.store import AccountStore, EventStore, open_engine
from tests.gateway_stack import gateway
from tests.helpers import assert_user_error, run

MESSAGES = [{"role": "user", "content": "What is six times seven?"}]
QUICK = b'{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}'


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('gateway') / 'store.db'}"


@pytest.fixture(scope="module")
def accounts(store) -> AccountStore:
    return AccountStore(open_engine(store))


@pytest.fixture(scope="module")
def stack(upstream, store, accounts):
    with gateway(upstream, store) as running:
        yield running


def new_key(accounts: AccountStore, account: str, **limits) -> str:
    key = accounts.issue_key(account, "org-" + account, Limits(**limits)).api_key
    time.sleep(0.5)  # the gateway reloads keys every 0.2 s in these tests
    return key


def client(stack, key: str, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url, api_key=key, **kwargs)


def refusals(stack) -> dict[tuple[str, ...], float]:
    """/metrics' refusal counts by (scope, kind, tier, mode), read by Prometheus' parser."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(stack.url.removesuffix("/v1") + "/metrics").text
    (family,) = (
        f for f in text_string_to_metric_families(text) if f.name == "distillguard_refusals"
    )
    labels = ("scope", "kind", "tier", "mode")
    return {
        tuple(s.labels[n] for n in labels): s.value
        for s in family.samples
        if s.name.endswith("_total")
    }


def post(stack, path: str, key: str | None, content: bytes) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    return httpx.post(stack.url + path, content=content, headers=headers, timeout=30)


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["message"]
    return error


# -- the openai SDK, unchanged ------------------------------------------------------------


def test_openai_sdk_chat_completions_and_streaming(stack, accounts):
    sdk = client(stack, new_key(accounts, "sdk-user"))
    answer = sdk.chat.completions.create(model="fake-model", messages=MESSAGES)
    assert answer.choices[0].message.content == "The answer is forty-two."
    assert answer.usage.completion_tokens == 5

    stream = sdk.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "The answer is forty-two."
    )
    assert all(c.usage is None for c in chunks)  # not asked for: the usage chunk is withheld

    stream = sdk.chat.completions.create(
        model="fake-model", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    assert [c.usage.completion_tokens for c in stream if c.usage] == [5]


def test_openai_sdk_completions_embeddings_models(stack, accounts):
    sdk = client(stack, new_key(accounts, "sdk-other"))
    assert sdk.completions.create(model="fake-model", prompt="Say it").choices[0].text
    assert sdk.embeddings.create(model="fake-model", input="hello").data[0].embedding == [0.1, 0.2]
    assert [m.id for m in sdk.models.list()] == ["fake-model"]


def test_openai_sdk_responses_whole_and_streamed_with_limits_and_events(upstream, tmp_path):
    """`/v1/responses` (the SDK's `responses.create`) is proxied like chat: admitted under
    the same limits, answered whole or streamed, one event each with its usage and text,
    which tracing reads; the watch tier's output rule strips its log-probabilities."""
    from distillguard.tracing.records import load_events

    store = f"sqlite:///{tmp_path / 'responses.db'}"
    accounts = AccountStore(open_engine(store))
    key = accounts.issue_key("responder", "org-r", Limits(rpm=3)).api_key
    watched = accounts.issue_key("watched-responder").api_key
    accounts.set_tier("watched-responder", "watch")
    with gateway(upstream, store) as running:
        sdk = client(running, key, max_retries=0)
        whole = sdk.responses.create(model="fake-model", input="Why is the sky blue?")
        assert whole.output_text == "The answer is forty-two." and whole.usage.output_tokens == 5
        asked = [{"role": "user", "content": [{"type": "input_text", "text": "And at dusk?"}]}]
        with sdk.responses.create(model="fake-model", input=asked, stream=True) as stream:
            kinds = [e.type for e in stream]
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        assert kinds.count("response.output_text.delta") == 5
        with pytest.raises(openai.RateLimitError):  # the third request of a 3 rpm key
            for _ in range(2):
                sdk.responses.create(model="fake-model", input="Once more?")
        sdk = client(running, watched, max_retries=0)
        echoed = sdk.responses.create(
            model="echo-fields",
            input="What do you see?",
            top_logprobs=5,
            include=["message.output_text.logprobs", "reasoning.encrypted_content"],
            max_output_tokens=9000,
        )
    seen = json.loads(echoed.output_text)
    assert seen["top_logprobs"] is None and seen["include"] == ["reasoning.encrypted_content"]
    assert seen["max_output_tokens"] == 4096
    events = list(EventStore(open_engine(store)).read(account_id="responder"))
    assert [(e["endpoint"], e["status"]) for e in events] == [("/responses", 200)] * 3 + [
        ("/responses", 429)
    ]
    assert [(e["prompt_tokens"], e["completion_tokens"]) for e in events[:2]] == [(7, 5)] * 2
    assert events[1]["stream"] and events[1]["response_text"] == "The answer is forty-two."
    traced, _ = load_events(None, open_engine(store), {"responder"})
    assert [e.text for e in traced[:2]] == ["Why is the sky blue?", "And at dusk?"]


@pytest.mark.parametrize("behind_plugin", [False, True])
def test_engine_fields_a_client_sends_never_reach_the_upstream(upstream, tmp_path, behind_plugin):
    """vLLM's `vllm_xargs` (what its logits processors read) and `watermarking: false` (its
    opt-out) are stripped; behind the plug-in the gateway sets the account's cohort itself."""
    from distillguard.watermark import WatermarkKey
    from distillguard.watermark.cohorts import COHORT_ARG, Cohorts

    key = WatermarkKey(bytes(range(32)), "wk_fixedtestkey09")
    key.save(tmp_path / "key.json")
    args, env = (), {}
    if behind_plugin:
        args = ("--watermark-key", str(tmp_path / "key.json"))
        env = {"DISTILLGUARD_GATEWAY__UPSTREAM_WATERMARK": "true"}
    store = f"sqlite:///{tmp_path / 'store.db'}"
    api_key = AccountStore(open_engine(store)).issue_key("forger").api_key
    forged = {
        "vllm_xargs": {COHORT_ARG: 3, "other": 1},
        "watermarking": False,
        "kv_transfer_params": {"do_remote_prefill": True},
        "request_id": "chosen-by-client",
    }
    with gateway(upstream, store, *args, env=env) as running:
        sdk = client(running, api_key, max_retries=0)
        answer = sdk.chat.completions.create(
            model="echo-fields", messages=MESSAGES, extra_body=forged
        )
        beams = {"use_beam_search": True, "n": 2}
        if behind_plugin:  # beam search ranks by unmarked log-probabilities: refused
            with pytest.raises(openai.BadRequestError) as refused:
                sdk.chat.completions.create(
                    model="echo-fields", messages=MESSAGES, extra_body=beams
                )
            assert refused.value.body["param"] == "use_beam_search"
        else:
            sdk.chat.completions.create(model="echo-fields", messages=MESSAGES, extra_body=beams)
    seen = json.loads(answer.choices[0].message.content)
    cohort = {COHORT_ARG: Cohorts(key, 64).of("forger")} if behind_plugin else None
    assert (seen["vllm_xargs"], seen["watermarking"]) == (cohort, None)
    assert (seen["kv_transfer_params"], seen["request_id"]) == (None, None)


def test_rate_limit_refusal_is_openai_shaped_and_sdk_retry_succeeds(stack, accounts):
    key = new_key(accounts, "burst-user", rpm=60)  # one request per second after a burst of 60
    body = b'{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}'
    started = time.monotonic()
    admitted = 0
    while (refused := post(stack, "/chat/completions", key, body)).status_code == 200:
        admitted += 1
    # A burst of exactly 60, plus the one request per second that refills meanwhile.
    assert 60 <= admitted <= 60 + int(time.monotonic() - started) + 1
    # OpenAI's own shape: the code says a rate limit, the type which kind, the message whose.
    error = assert_openai_error(refused, 429, "rate_limit_exceeded")
    assert error["type"] == "requests" and "for key (requests per minute)" in error["message"]
    headers = refused.headers
    assert headers["x-ratelimit-limit-requests"] == "60"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert 0 < int(headers["retry-after-ms"]) <= 1000
    assert headers["retry-after"] == "1"
    assert headers["x-ratelimit-reset-requests"].endswith("s")

    # The SDK, straight after a refusal (the next slot frees up to 1 s later), must be
    # refused, honour retry-after-ms and then succeed. The statuses it saw prove the path.
    seen: list[int] = []
    hooks = {"response": [lambda response: seen.append(response.status_code)]}
    sdk = client(stack, key, max_retries=3, http_client=httpx.Client(event_hooks=hooks))
    while post(stack, "/chat/completions", key, body).status_code == 200:
        pass
    answer = sdk.chat.completions.create(model="fake-model", messages=MESSAGES)
    assert answer.choices[0].message.content
    assert seen[-1] == 200 and 429 in seen, seen


def test_token_reservation_larger_than_the_limit_is_refused_without_retry(stack, accounts):
    key = new_key(accounts, "small-tpm", tpm=1000)
    body = (
        b'{"model": "fake-model", "max_tokens": 5000, '
        b'"messages": [{"role": "user", "content": "hi"}]}'
    )
    refused = post(stack, "/chat/completions", key, body)
    error = assert_openai_error(refused, 429, "rate_limit_exceeded")
    assert error["type"] == "tokens" and error["message"].startswith("request too large")
    assert refused.headers["x-should-retry"] == "false"
    ok = post(stack, "/chat/completions", key, body.replace(b"5000", b"100"))
    assert ok.status_code == 200


# -- bad input: OpenAI-shaped 4xx, never a 500 ------------------------------------------------


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b'{"model": "fake-model", "messages": [', "invalid_json"),
        (b'{"model": "fake-model", "messages": "hi"}', "invalid_request"),
        (b'{"model": 3, "messages": [{"role": "user", "content": "hi"}]}', "invalid_request"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "\xff"}]}', "invalid_encoding"),
        (b"[1, 2]", "invalid_json"),
        (
            b'{"model": "m", "messages": [{"role": "user", "content": "' + b"x" * 5000 + b'"}]}',
            "body_too_large",
        ),
    ],
)
def test_malformed_requests_get_a_400_class_error(stack, accounts, content, code):
    key = new_key(accounts, "bad-input")
    response = post(stack, "/chat/completions", key, content)
    assert 400 <= response.status_code < 500
    assert_openai_error(response, response.status_code, code)


def test_wrong_type_names_the_parameter(stack, accounts):
    key = new_key(accounts, "bad-param")
    body = (
        b'{"model": "fake-model", "max_tokens": "many", '
        b'"messages": [{"role": "user", "content": "hi"}]}'
    )
    error = assert_openai_error(post(stack, "/chat/completions", key, body), 400, "invalid_request")
    assert error["param"] == "max_tokens"


def test_missing_invalid_and_revoked_keys_are_401(stack, accounts):
    body = b'{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}'
    assert_openai_error(post(stack, "/chat/completions", None, body), 401, "missing_api_key")
    assert_openai_error(
        post(stack, "/chat/completions", "dg-nope-nope", body), 401, "invalid_api_key"
    )
    issued = accounts.issue_key("to-revoke")
    time.sleep(0.5)
    assert post(stack, "/chat/completions", issued.api_key, body).status_code == 200
    accounts.revoke_key(issued.record.key_id)
    time.sleep(0.5)
    assert_openai_error(
        post(stack, "/chat/completions", issued.api_key, body), 401, "invalid_api_key"
    )


def test_upstream_errors_become_502_504_and_unknown_models_404(stack, accounts):
    key = new_key(accounts, "upstream-errors")

    def ask(model: str) -> httpx.Response:
        body = f'{{"model": "{model}", "messages": [{{"role": "user", "content": "hi"}}]}}'
        return post(stack, "/chat/completions", key, body.encode())

    assert_openai_error(ask("fail-500"), 502, "upstream_error")
    assert_openai_error(ask("slow-10"), 504, "upstream_timeout")
    error = assert_openai_error(ask("unknown-model"), 404, "model_not_found")
    assert error["type"] == "invalid_request_error"


def test_upstream_down_is_a_502(upstream, store, accounts):
    key = accounts.issue_key("no-upstream").api_key
    with gateway("http://127.0.0.1:9/v1", store) as dead:  # nothing listens on port 9
        body = b'{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}'
        assert_openai_error(post(dead, "/chat/completions", key, body), 502, "upstream_error")


# -- concurrency slots are never leaked ----------------------------------------------------------


def test_concurrency_slot_is_released_after_cancelled_streams_and_timeouts(stack, accounts):
    key = new_key(accounts, "one-at-a-time", concurrency=1)
    body = b'{"model": "slow-0.5", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
    # A slow stream holds the only slot: a second request is refused meanwhile.
    with httpx.stream(
        "POST",
        stack.url + "/chat/completions",
        content=body,
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        chunks = response.iter_bytes()  # keep the iterator: dropping it closes the response
        next(chunks)
        quick = b'{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}'
        error = assert_openai_error(
            post(stack, "/chat/completions", key, quick), 429, "rate_limit_exceeded"
        )
        assert "concurrent requests" in error["message"]
    # The client hung up mid-stream; an upstream timeout follows; each must free the slot.
    time.sleep(0.3)
    timeout = b'{"model": "slow-10", "messages": [{"role": "user", "content": "hi"}]}'
    assert post(stack, "/chat/completions", key, timeout).status_code == 504
    quick = b'{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}'
    assert post(stack, "/chat/completions", key, quick).status_code == 200
    metrics = httpx.get(stack.url.removesuffix("/v1") + "/metrics").text
    assert "distillguard_in_flight_requests 0.0" in metrics
    refused = refusals(stack)
    assert refused.get(("key", "concurrency", "normal", "enforced"), 0) >= 1, refused


def test_sdk_retries_a_concurrency_refusal_until_the_slot_frees(stack, accounts):
    key = new_key(accounts, "retry-slot", concurrency=1)
    slow = threading.Thread(
        target=lambda: client(stack, key).chat.completions.create(model="slow-1", messages=MESSAGES)
    )
    slow.start()
    time.sleep(0.3)
    answer = client(stack, key, max_retries=5).chat.completions.create(
        model="fake-model", messages=MESSAGES
    )
    slow.join()
    assert answer.choices[0].message.content


# -- policy ---------------------------------------------------------------------------------


def test_blocked_account_gets_403_and_shadow_mode_only_logs(upstream, store, stack, accounts):
    key = new_key(accounts, "to-block")
    run_result = run("accounts", "set-tier", "to-block", "block", "--store", store)
    assert run_result.returncode == 0, run_result.stderr
    time.sleep(0.5)
    body = b'{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}'
    before = refusals(stack).get(("tier", "block", "block", "enforced"), 0)
    error = assert_openai_error(post(stack, "/chat/completions", key, body), 403, "account_blocked")
    assert error["type"] == "permission_error"
    assert refusals(stack)[("tier", "block", "block", "enforced")] == before + 1
    with gateway(upstream, store, "--shadow") as shadow:
        assert post(shadow, "/chat/completions", key, body).status_code == 200
        assert refusals(shadow) == {("tier", "block", "block", "shadow"): 1}
    events = [e for e in EventStore(open_engine(store)).read(account_id="to-block")]
    assert [(e["status"], e["decision"], e["shadow"]) for e in events] == [
        (403, "blocked", False),
        (200, "blocked", True),
    ]


def test_unknown_tier_is_a_clear_cli_error(store, accounts):
    accounts.issue_key("tiered")
    assert_user_error(
        run("accounts", "set-tier", "tiered", "sideways", "--store", store), "unknown tier"
    )
    assert_user_error(run("keys", "revoke", "nope", "--store", store), "no API key")


# -- the event log --------------------------------------------------------------------------------


def test_every_request_is_one_event_and_none_is_lost_on_shutdown(upstream, tmp_path):
    store = f"sqlite:///{tmp_path / 'events.db'}"
    accounts = AccountStore(open_engine(store))
    key = accounts.issue_key("eventful", "org-e").api_key
    with gateway(upstream, store) as running:
        sdk = client(running, key)
        for _ in range(40):
            sdk.chat.completions.create(model="fake-model", messages=MESSAGES, max_tokens=9)
        list(sdk.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True))
        post(running, "/chat/completions", None, b"{}")
        assert running.stop() in (0, -signal.SIGTERM)
    events = list(EventStore(open_engine(store)).read())
    assert len(events) == 42
    first = events[0]
    assert first["account_id"] == "eventful" and first["org_id"] == "org-e"
    assert first["request"]["max_tokens"] == 9 and first["request"]["messages"] == MESSAGES
    assert first["response_text"] == "The answer is forty-two."
    assert (first["prompt_tokens"], first["completion_tokens"]) == (7, 5)
    assert first["decision"] == "admitted" and first["status"] == 200
    assert first["user_agent"].startswith("OpenAI/Python")
    assert (
        events[40]["stream"] is True and events[40]["response_text"] == "The answer is forty-two."
    )
    assert (events[41]["status"], events[41]["decision"]) == (401, "rejected")

    exported = run("events", "export", "--format", "jsonl", "--store", store)
    assert exported.returncode == 0
    assert len(exported.stdout.strip().split("\n")) == 42

    # --since as RFC 3339 in any zone, or Unix seconds: the same events.
    # Between two events far enough apart that microsecond rounding cannot move either.
    i = next(i for i in range(20, 41) if events[i]["ts"] - events[i - 1]["ts"] > 1e-4)
    boundary = (events[i - 1]["ts"] + events[i]["ts"]) / 2
    later = len(events) - i
    utc = datetime.fromtimestamp(boundary, UTC)
    for since in (
        utc.isoformat().replace("+00:00", "Z"),
        utc.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat(),
        repr(boundary),
    ):
        exported = run("events", "export", "--since", since, "--store", store)
        assert exported.returncode == 0, exported.stderr
        assert len(exported.stdout.strip().split("\n")) == later, since
    naive = utc.replace(tzinfo=None).isoformat()
    assert_user_error(run("events", "export", "--since", naive, "--store", store), "time zone")
    assert_user_error(run("events", "export", "--until", "yesterday", "--store", store), "RFC 3339")


def test_serve_says_what_it_serves_and_logs_upstream_failures_once_in_a_while(tmp_path):
    store = f"sqlite:///{tmp_path / 'logs.db'}"
    key = AccountStore(open_engine(store)).issue_key("logged").api_key
    down = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
    with gateway(down, store, "--json-logs", "--access-log") as running:
        for _ in range(5):
            assert post(running, "/chat/completions", key, QUICK).status_code == 502
        running.stop()
        lines = [json.loads(line) for line in running.process.stderr.read().splitlines()]
    first = lines[0]
    assert (first["level"], first["logger"]) == ("info", "distillguard.gateway")
    assert first["message"].startswith(f"serving {running.url}; upstream {down}, answers not")
    for part in (f"store {store}", "in-process limits", "admin API off"):
        assert part in first["message"], first["message"]
    # Five failures within seconds: one line says so, not five.
    failed = [x for x in lines if "upstream connection failed" in x["message"]]
    assert len(failed) == 1 and failed[0]["level"] == "warning", lines
    access = [x["message"] for x in lines if x["logger"] == "uvicorn.access"]
    assert sum("POST /v1/chat/completions" in x and " 502" in x for x in access) == 5, access


def test_several_workers_without_redis_are_refused(upstream, store):
    result = run("serve", "--upstream", upstream, "--store", store, "--workers", "2")
    assert_user_error(result, "--workers above 1 needs --redis")


def test_an_upstream_watermark_without_the_master_key_is_refused(upstream, store):
    env = {"DISTILLGUARD_GATEWAY__UPSTREAM_WATERMARK": "true"}
    result = run("serve", "--upstream", upstream, "--store", store, env=env)
    assert_user_error(result, "gateway.upstream_watermark needs")


def test_each_tier_takes_what_its_output_rule_allows(stack, accounts):
    """normal: everything; watch: logprobs stripped, n <= 4, max_tokens lowered to 4,096;
    throttle: logprobs and n > 1 refused (OpenAI-shaped 400s), max_tokens lowered to 1,024."""
    asks = {"logprobs": True, "top_logprobs": 5, "max_tokens": 8000}
    seen = {}
    for tier in ("normal", "watch", "throttle"):
        key = new_key(accounts, f"output-{tier}")
        accounts.set_tier(f"output-{tier}", tier)
        time.sleep(0.5)  # the gateway reloads keys (and tiers) every 0.2 s here
        sdk = client(stack, key, max_retries=0)

        def echo(sdk=sdk, **body):
            answer = sdk.chat.completions.create(model="echo-fields", messages=MESSAGES, **body)
            return json.loads(answer.choices[0].message.content)

        if tier == "throttle":
            with pytest.raises(openai.BadRequestError) as refused:
                echo(**asks)
            assert refused.value.body["param"] == "logprobs"
            assert refused.value.body["code"] == "parameter_not_allowed"
            with pytest.raises(openai.BadRequestError, match="`n` above 1"):
                echo(n=2)
            for zero in ({"prompt_logprobs": 0}, {"logprob_token_ids": [5]}):  # still asks
                with pytest.raises(openai.BadRequestError, match=next(iter(zero))):
                    echo(extra_body=zero)
            seen[tier] = echo(max_completion_tokens=5000)
        else:
            seen[tier] = {**echo(**asks), "n": echo(n=4)["n"]}
            seen[tier]["zero"] = echo(extra_body={"prompt_logprobs": 0})["prompt_logprobs"]
    assert seen["normal"] == {**seen["normal"], "logprobs": True, "top_logprobs": 5}
    assert seen["normal"]["max_tokens"] == 8000
    assert (seen["watch"]["logprobs"], seen["watch"]["top_logprobs"]) == (None, None)
    assert (seen["normal"]["zero"], seen["watch"]["zero"]) == (0, None)
    assert (seen["watch"]["max_tokens"], seen["watch"]["n"]) == (4096, 4)
    assert seen["throttle"]["max_completion_tokens"] == 1024
    assert seen["throttle"]["max_tokens"] is None  # the client's own field is the one lowered
