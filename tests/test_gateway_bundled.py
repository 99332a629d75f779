"""`serve --engine bundled`: the real model answers, watermarked with its cohort's key."""

from __future__ import annotations

import numpy as np
import openai
import pytest

from distillguard.engine.bundled import load_text_tokenizer
from distillguard.gateway.backends.bundled import MODEL_NAME
from distillguard.store import AccountStore, EventStore, open_engine
from distillguard.watermark import WatermarkKey
from distillguard.watermark.cohorts import Cohorts
from tests.gateway_stack import gateway

pytestmark = pytest.mark.model
COHORTS = 8
PROMPT = [{"role": "user", "content": "Write a long story about a dragon who learns to cook."}]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bundled")
    key = WatermarkKey(secret=bytes(range(136, 168)), key_id="wk_fixedtestkey06")  # no luck
    key.save(workdir / "key.json")
    store = f"sqlite:///{workdir / 'store.db'}"
    api_key = AccountStore(open_engine(store)).issue_key("writer").api_key
    args = ("--engine", "bundled", "--watermark-key", str(workdir / "key.json"))
    env = {"DISTILLGUARD_GATEWAY__COHORTS": str(COHORTS)}
    with gateway(None, store, *args, env=env) as stack:
        yield stack, api_key, Cohorts(key, COHORTS)


def test_answers_whole_and_streamed_carry_the_accounts_cohort_watermark(served, cache_dir):
    stack, api_key, cohorts = served
    sdk = openai.OpenAI(base_url=stack.url, api_key=api_key, max_retries=0)
    assert [m.id for m in sdk.models.list()] == [MODEL_NAME]

    whole = sdk.chat.completions.create(model=MODEL_NAME, messages=PROMPT, max_tokens=150, seed=3)
    assert whole.usage.completion_tokens > 50
    stream = sdk.chat.completions.create(
        model=MODEL_NAME,
        messages=PROMPT,
        max_tokens=150,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens > 50
    # As OpenAI streams: the first delta names the role, before any text.
    assert (chunks[0].choices[0].delta.role, chunks[0].choices[0].delta.content) == (
        "assistant",
        "",
    )

    tokenizer = load_text_tokenizer(cache_dir)
    answers = [
        np.array(tokenizer.encode(t, add_special_tokens=False).ids)
        for t in (whole.choices[0].message.content, streamed)
    ]
    mine = cohorts.of("writer")
    own = cohorts.watermark(mine).detect_corpus(answers)
    assert own.p_value < 1e-4, own
    others = [cohorts.watermark(c).detect_corpus(answers).p_value for c in range(COHORTS)]
    assert min(p for c, p in enumerate(others) if c != mine) > 1e-4  # attribution: one cohort

    events = list(EventStore(open_engine(stack.store)).read())
    assert [e["cohort"] for e in events if e["status"] == 200] == [mine, mine]
    assert events[-1]["response_text"] == streamed


def test_the_responses_api_whole_and_streamed_carries_the_cohorts_watermark(served, cache_dir):
    """`responses.create`, whole and streamed, and the SDK's `responses.stream` helper
    (which rebuilds the answer from the typed events) on the real model; what it cannot
    do is refused by name."""
    stack, api_key, cohorts = served
    sdk = openai.OpenAI(base_url=stack.url, api_key=api_key, max_retries=0)
    whole = sdk.responses.create(
        model=MODEL_NAME,
        instructions="You are a storyteller.",
        input=PROMPT[0]["content"],
        max_output_tokens=150,
    )
    assert whole.status == "incomplete" and whole.incomplete_details.reason == "max_output_tokens"
    assert whole.usage.output_tokens == 150 and whole.usage.input_tokens > 10
    events = list(
        sdk.responses.create(model=MODEL_NAME, input=PROMPT, max_output_tokens=150, stream=True)
    )
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    final = events[-1].response  # cut at the cap: `response.incomplete`, as OpenAI ends it
    assert events[0].type == "response.created" and events[-1].type == "response.incomplete"
    assert len(deltas) > 20 and "".join(deltas) == final.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))
    # The SDK's helper rebuilds a finished answer from the events.
    short = [{"role": "user", "content": "Say hello in five words."}]
    with sdk.responses.stream(model=MODEL_NAME, input=short, max_output_tokens=100) as stream:
        said = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        assert stream.get_final_response().output_text == said and said
    tokenizer = load_text_tokenizer(cache_dir)
    answers = [
        np.array(tokenizer.encode(t, add_special_tokens=False).ids)
        for t in (whole.output_text, final.output_text)
    ]
    assert cohorts.watermark(cohorts.of("writer")).detect_corpus(answers).p_value < 1e-4
    refusals = (
        {"tools": [{"type": "function", "name": "f", "parameters": {}}]},
        {"previous_response_id": "resp_123"},
        {"include": ["message.output_text.logprobs"]},
    )
    for asked in refusals:
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.responses.create(model=MODEL_NAME, input="hi", max_output_tokens=5, **asked)
        assert refused.value.body["param"] == next(iter(asked)), refused.value.body
    tool_output = [{"type": "function_call_output", "call_id": "c1", "output": "42"}]
    with pytest.raises(openai.BadRequestError, match="message items only"):
        sdk.responses.create(model=MODEL_NAME, input=tool_output, max_output_tokens=5)


def test_unknown_model_and_unsupported_requests_are_clear_4xx(served):
    stack, api_key, _ = served
    sdk = openai.OpenAI(base_url=stack.url, api_key=api_key, max_retries=0)
    with pytest.raises(openai.NotFoundError, match=MODEL_NAME):
        sdk.chat.completions.create(model="gpt-4o", messages=PROMPT)
    with pytest.raises(openai.BadRequestError, match="embeddings"):
        sdk.embeddings.create(model=MODEL_NAME, input="hello")
    # Parameters it does not implement are refused by name, never silently ignored.
    for asked in ({"logprobs": True}, {"stop": ["\n"]}, {"presence_penalty": 0.5}):
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.chat.completions.create(model=MODEL_NAME, messages=PROMPT, max_tokens=5, **asked)
        assert refused.value.body["param"] == next(iter(asked)), refused.value.body
    # A completions prompt as a list of one (LangChain's OpenAI class sends that); more
    # than one is refused by name.
    listed = sdk.completions.create(model=MODEL_NAME, prompt=["Once upon a time"], max_tokens=5)
    assert listed.choices[0].text and listed.usage.prompt_tokens > 0
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.completions.create(model=MODEL_NAME, prompt=["one", "two"], max_tokens=5)
    assert refused.value.body["param"] == "prompt", refused.value.body
    # ... and their defaults ask for nothing.
    quiet = {"logprobs": False, "stop": None, "presence_penalty": 0}
    assert sdk.chat.completions.create(model=MODEL_NAME, messages=PROMPT, max_tokens=5, **quiet)


def test_suspect_api_mode_names_the_cohort_behind_an_endpoint(served, upstream, tmp_path):
    """Our own gateway as the suspect API (a model that carries one cohort's watermark
    fully): API mode names that cohort; a clean endpoint gets "no evidence"."""
    import json

    from tests.helpers import run
    from tests.test_suspect import write_prompts

    stack, api_key, cohorts = served
    key = tmp_path / "key.json"
    cohorts.key.save(key)
    prompts = write_prompts(tmp_path / "prompts.jsonl", 8)
    args = [
        "suspect",
        "test",
        "--key",
        str(key),
        "--prompts",
        str(prompts),
        "--cohorts",
        str(COHORTS),
        "--max-tokens",
        "64",
        "--api-model",
        MODEL_NAME,
    ]
    result = run(*args, "--api-url", stack.url, env={"DISTILLGUARD_SUSPECT_API_KEY": api_key})
    assert result.returncode == 0, result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["mode"] == "api" and verdict["verdict"] == "trained on our outputs"
    assert verdict["named_cohorts"] == [cohorts.of("writer")]
    assert verdict["control"]["significant"] is False

    clean = run(*args[:-2], "--api-model", "fake-model", "--api-url", upstream)
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)["verdict"] == "no evidence"


def test_the_bundled_model_beside_an_upstream_answers_by_model_name(upstream, tmp_path):
    """`--engine bundled --upstream URL`: the bundled model's name is answered here,
    watermarked; every other model goes upstream; one store, one set of limits."""
    key = WatermarkKey.generate()
    key.save(tmp_path / "key.json")
    store = f"sqlite:///{tmp_path / 'store.db'}"
    api_key = AccountStore(open_engine(store)).issue_key("both").api_key
    args = ("--engine", "bundled", "--watermark-key", str(tmp_path / "key.json"))
    with gateway(upstream, store, *args) as stack:
        sdk = openai.OpenAI(base_url=stack.url, api_key=api_key, max_retries=0)
        listed = [m.id for m in sdk.models.list()]
        assert listed[0] == MODEL_NAME and len(listed) > 1  # ours first, then the upstream's
        proxied = sdk.chat.completions.create(model="fake-model", messages=PROMPT)
        assert proxied.choices[0].message.content == "The answer is forty-two."
        ours = sdk.chat.completions.create(model=MODEL_NAME, messages=PROMPT, max_tokens=40)
        assert ours.model == MODEL_NAME and ours.usage.completion_tokens > 10
        assert ours.choices[0].message.content != "The answer is forty-two."
    events = list(EventStore(open_engine(store)).read())
    assert [(e["model"], e["status"]) for e in events] == [("fake-model", 200), (MODEL_NAME, 200)]
    assert events[0]["cohort"] == events[1]["cohort"] is not None
