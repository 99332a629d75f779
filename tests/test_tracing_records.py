"""Tracing input: both event shapes, bad lines reported by number and skipped."""

from __future__ import annotations

import json

import pytest

from distillguard.tracing.records import (
    InputReport,
    TraceInputError,
    read_accounts,
    read_events,
)


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_contract_and_gateway_export_shapes_give_the_same_event(tmp_path):
    contract = {
        "ts": "2026-11-02T10:00:00Z",
        "account_id": "a1",
        "ip": "10.0.0.1",
        "model": "m",
        "max_tokens": 512,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "second"}]},
        ],
        "completion_tokens": 40,
    }
    gateway = {  # what `distillguard events export` writes
        "id": 7,
        "ts": 1793613600.0,
        "account_id": "a1",
        "client_ip": "10.0.0.1",
        "model": "m",
        "request": {"model": "m", "max_tokens": 512, "messages": contract["messages"]},
        "completion_tokens": 40,
        "status": 200,
    }
    path = _write(tmp_path / "e.jsonl", [json.dumps(contract), json.dumps(gateway)])
    first, second = list(read_events(path))
    assert first.ts == second.ts == 1793613600.0
    for event in (first, second):
        assert event.text == "second" and event.user_turns == 2
        assert (event.ip, event.max_tokens, event.completion_tokens) == ("10.0.0.1", 512, 40)


@pytest.mark.parametrize(
    ("fields", "answer", "prompt"),
    [
        ({}, False, False),
        ({"logprobs": False, "top_logprobs": None}, False, False),
        ({"logprobs": True, "top_logprobs": 5}, True, False),  # chat
        ({"logprobs": 0}, True, False),  # completions: the sampled token's (vLLM, OpenAI)
        ({"logprobs": 1, "echo": True}, True, True),  # completions: the prompt's too
        ({"echo": True}, False, False),  # the prompt's text back, no log-probabilities
        ({"prompt_logprobs": 0}, True, True),  # vLLM
        ({"logprob_token_ids": [17, 42]}, True, False),  # vLLM: named tokens'
    ],
)
def test_what_of_the_logit_channel_was_asked_is_read_in_both_shapes(
    tmp_path, fields, answer, prompt
):
    contract = {"ts": 1.0, "account_id": "a", "prompt": "Once upon a", **fields}
    gateway = {"ts": 1.0, "account_id": "a", "request": {"prompt": "Once upon a", **fields}}
    path = _write(tmp_path / "e.jsonl", [json.dumps(contract), json.dumps(gateway)])
    for event in read_events(path):
        assert (event.logprobs, event.prompt_logprobs) == (answer, prompt)


def test_bad_lines_are_reported_by_number_and_the_rest_is_read(tmp_path):
    good = {"ts": "2026-11-02T10:00:00+01:00", "account_id": "a", "prompt": "hi"}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "ts": "2026-11-02T10:00:00"}),  # no time zone
        json.dumps({**good, "account_id": 5}),
        json.dumps({k: v for k, v in good.items() if k != "prompt"}),
        json.dumps({**good, "max_tokens": "many"}),
        "[1, 2]",
        json.dumps({**good, "messages": [{"content": "no role"}]}),
        json.dumps(good),
    ]
    path = _write(tmp_path / "e.jsonl", lines)
    report = InputReport("e.jsonl")
    events = list(read_events(path, report))
    assert len(events) == 2 and report.read == 2 and report.bad == 7
    numbers = [p.split(":")[1] for p in report.problems]
    assert numbers == ["2", "3", "4", "5", "6", "7", "8"]
    assert "time zone" in report.problems[1]
    assert "`account_id`" in report.problems[2]
    assert "`messages` or `prompt`" in report.problems[3]
    assert "got `str` at `max_tokens`" in report.problems[4]
    assert "7 bad lines" in report.summary()


def test_accounts_file_and_missing_files(tmp_path):
    path = _write(
        tmp_path / "a.jsonl",
        [
            json.dumps({"account_id": "a", "created_at": "2026-10-01T00:00:00Z", "email": "x@y"}),
            json.dumps({"email": "no id"}),
        ],
    )
    report = InputReport("a.jsonl")
    accounts = read_accounts(path, report)
    assert list(accounts) == ["a"] and accounts["a"].email == "x@y"
    assert report.bad == 1 and "a.jsonl:2" in report.problems[0]
    with pytest.raises(TraceInputError, match="cannot read"):
        list(read_events(tmp_path / "missing.jsonl"))


def test_unanswered_requests_are_left_out_and_counted(tmp_path):
    base = {"ts": "2026-11-02T10:00:00Z", "account_id": "a", "prompt": "hello there"}
    path = _write(
        tmp_path / "e.jsonl",
        [
            json.dumps({**base, "status": 200}),
            json.dumps({**base, "status": 429}),
            json.dumps(base),
        ],
    )
    report = InputReport("e.jsonl")
    assert len(list(read_events(path, report))) == 2
    assert report.unanswered == 1 and "1 unanswered requests" in report.summary()


def test_tiny_and_empty_batches_are_described():
    from distillguard.tracing.features import describe
    from distillguard.tracing.records import TraceEvent
    from distillguard.tracing.run import trace

    short = describe([TraceEvent(ts=1.0, account_id="a", text="hi", user_turns=1)])
    assert short.head.tolist() == [0] and short.tail.tolist() == [0]
    assert describe([]).bands.shape == (0, 8)
    assert trace([], {}).accounts == []


def test_a_line_of_invalid_utf8_is_one_reported_line(tmp_path):
    good = json.dumps({"ts": 1_795_000_000, "account_id": "a", "prompt": "hi"}).encode()
    path = tmp_path / "e.jsonl"
    path.write_bytes(good + b"\n" + b'{"account_id": "\xff\xfe", "prompt": "x"}\n' + good + b"\n")
    report = InputReport("e.jsonl")
    assert len(list(read_events(path, report))) == 2
    assert report.bad == 1 and report.problems[0].split(":")[1] == "2"
