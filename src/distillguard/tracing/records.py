"""Tracing's input: request events and account records, read from JSONL or the store.

The contract is in docs/tracing.md. Two shapes of event are accepted and
mapped onto one `TraceEvent`: the documented tracing JSONL (`ts` in RFC 3339,
`messages` or `prompt` at the top level) and the gateway's own event log
(`ts` in Unix seconds, the body under `request`, `client_ip`), as
`distillguard events export` writes it. A bad line never stops a run: it is
reported with its line number and the good lines are still used.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from distillguard.errors import DistillguardError

if TYPE_CHECKING:
    from sqlalchemy import Engine

# How many bad lines are described one by one; the rest are only counted.
MAX_REPORTED = 20
# The logit channel, in OpenAI's names and vLLM's (`prompt_logprobs`: over the prompt too;
# `logprob_token_ids`: the log-probabilities of tokens the client names).
LOGIT_FIELDS = ("logprobs", "top_logprobs", "prompt_logprobs", "logprob_token_ids")


def asks(value: Any) -> bool:
    """Is a logit field asked for? Anything but null and `false`: vLLM reads `logprobs: 0`
    on completions as the sampled token's log-probability, `prompt_logprobs: 0` as the
    prompt's."""
    return value is not None and value is not False


class TraceInputError(DistillguardError):
    """A tracing input file cannot be read at all (missing, not UTF-8, no valid line)."""


@dataclass(slots=True)
class TraceEvent:
    """One request, reduced to what the signals read."""

    ts: float  # Unix seconds
    account_id: str
    text: str  # the last user message (or the prompt): what was asked this time
    user_turns: int  # user messages in the request: > 1 is a multi-turn conversation
    org_id: str | None = None
    key_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    response_chars: int = 0
    status: int | None = None
    conversation_id: str | None = None
    # The model's distribution was asked for (LOGIT_FIELDS): over the answer's tokens, and
    # over the prompt's too (`prompt_logprobs`, or completions' `echo` with `logprobs`).
    logprobs: bool = False
    prompt_logprobs: bool = False


@dataclass(slots=True)
class AccountRecord:
    account_id: str
    org_id: str | None = None
    created_at: float | None = None
    email: str | None = None
    payment_fingerprint: str | None = None
    country: str | None = None
    signup_ip: str | None = None


@dataclass
class InputReport:
    """What was read from one file: good records and the bad lines, by number."""

    path: str
    read: int = 0
    problems: list[str] = field(default_factory=list)
    bad: int = 0
    unanswered: int = 0  # valid requests that got an error status: nothing was taken away

    def reject(self, line: int, why: str) -> None:
        self.bad += 1
        if len(self.problems) < MAX_REPORTED:
            self.problems.append(f"{self.path}:{line}: {why}")

    def summary(self) -> str:
        text = f"{self.path}: {self.read} records read, {self.bad} bad lines skipped"
        if self.unanswered:
            text += f", {self.unanswered} unanswered requests (status >= 400) left out"
        more = self.bad - len(self.problems)
        return text + (f" ({more} more not listed)" if more > 0 else "")


class _Bad(Exception):
    """One line's problem; becomes a numbered line in the report."""


# The accepted shapes as typed structs: msgspec decodes and type-checks a line in one
# C pass (~1 µs), and names the offending field itself ("Expected `int`, got `str` -
# at `$.max_tokens`"). Unknown fields are ignored: the gateway's rows carry more.
class _Message(msgspec.Struct):
    role: str
    content: str | list[Any] | None = None


class _Logits(msgspec.Struct):
    """The logit channel's fields, at the top level of a row or in a request body; any JSON
    value (OpenAI's chat takes a boolean, its completions an integer, vLLM a list too)."""

    logprobs: Any = None
    top_logprobs: Any = None
    prompt_logprobs: Any = None
    logprob_token_ids: Any = None
    echo: Any = None
    include: Any = None  # the Responses API: "message.output_text.logprobs" asks for them

    def asked(self) -> tuple[bool, bool]:
        """(the answer's log-probabilities, the prompt's)."""
        answer = asks(self.logprobs) or asks(self.top_logprobs) or asks(self.logprob_token_ids)
        if isinstance(self.include, list):
            answer = answer or any("logprobs" in str(item) for item in self.include)
        prompt = asks(self.prompt_logprobs) or (answer and self.echo is True)
        return answer or prompt, prompt


class _Body(_Logits):
    """The request body, as the gateway stores it under `request`."""

    messages: list[_Message] | None = None
    prompt: str | list[Any] | None = None
    input: str | list[Any] | None = None  # the Responses API's prompt: text or items
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    model: str | None = None


class _Row(_Logits):
    ts: str | float | None = None
    account_id: str | None = None
    messages: list[_Message] | None = None
    prompt: str | list[Any] | None = None
    request: _Body | None = None
    org_id: str | None = None
    key_id: str | None = None
    ip: str | None = None
    client_ip: str | None = None
    user_agent: str | None = None
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    response_text: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    status: int | None = None
    conversation_id: str | None = None


class _AccountRow(msgspec.Struct):
    account_id: str | None = None
    org_id: str | None = None
    created_at: str | float | None = None
    email: str | None = None
    payment_fingerprint: str | None = None
    country: str | None = None
    signup_ip: str | None = None


def read_events(path: Path, report: InputReport | None = None) -> Iterator[TraceEvent]:
    """Events of a JSONL file in file order; bad lines go to `report`."""
    report = report or InputReport(str(path))
    for number, row in _rows(path, report, _Row):
        try:
            event = _event(row)
        except _Bad as exc:
            report.reject(number, str(exc))
            continue
        if _answered(event, report):
            yield event


def read_accounts(path: Path, report: InputReport | None = None) -> dict[str, AccountRecord]:
    report = report or InputReport(str(path))
    accounts: dict[str, AccountRecord] = {}
    for number, row in _rows(path, report, _AccountRow):
        try:
            if not row.account_id:
                raise _Bad("missing `account_id`")
            record = AccountRecord(
                account_id=row.account_id,
                org_id=row.org_id,
                created_at=_time(row.created_at, "created_at"),
                email=row.email,
                payment_fingerprint=row.payment_fingerprint,
                country=row.country,
                signup_ip=row.signup_ip,
            )
        except _Bad as exc:
            report.reject(number, str(exc))
            continue
        report.read += 1
        accounts[record.account_id] = record
    return accounts


def events_from_rows(rows: Iterable[dict[str, Any]], report: InputReport) -> Iterator[TraceEvent]:
    """Events from the store's rows (the gateway's event log); unusable rows are counted."""
    for row in rows:
        if row.get("account_id") is None or row.get("request") is None:
            continue  # unauthenticated or unparsable requests: nobody to trace
        try:
            event = _event(msgspec.convert(row, _Row))
        except (_Bad, msgspec.ValidationError) as exc:
            report.reject(int(row.get("id") or 0), _why(exc))
            continue
        if _answered(event, report):
            yield event


def load_events(
    path: Path | None, engine: Engine | None, accounts: Collection[str] | None = None
) -> tuple[list[TraceEvent], InputReport]:
    """Events from a JSONL file, else from the store's event log (`engine`), with the
    report of what was skipped. With `accounts`, only theirs: the store's rows are
    filtered as they stream, so the whole log is never held in memory."""
    if path is not None:
        report = InputReport(str(path))
        found = read_events(path, report)
        return [e for e in found if accounts is None or e.account_id in accounts], report
    report = InputReport("store events")
    from distillguard.store import EventStore  # only for the store: files need no SQL

    rows = EventStore(engine).read()
    if accounts is not None:
        rows = (r for r in rows if r["account_id"] in accounts)
    return list(events_from_rows(rows, report)), report


def load_inputs(
    events: Path | None,
    accounts: Path | None,
    engine: Engine | None,
    on_report: Callable[[InputReport], None],
) -> tuple[list[TraceEvent], dict[str, AccountRecord]]:
    """A trace's input: the events (as `load_events`) and the signup records of an
    accounts file, if given. Each input's report goes to `on_report` before the check
    that any event is usable, so that a failed load still says which lines were bad."""
    loaded, report = load_events(events, engine)
    reports = [report]
    signups: dict[str, AccountRecord] = {}
    if accounts is not None:
        accounts_report = InputReport(str(accounts))
        signups = read_accounts(accounts, accounts_report)
        reports.append(accounts_report)
        if not signups:
            raise TraceInputError(f"{accounts}: no usable account record")
    for each in reports:
        on_report(each)
    if not loaded:
        raise TraceInputError(f"{report.path}: no usable events")
    return loaded, signups


def _answered(event: TraceEvent, report: InputReport) -> bool:
    """Count the event as read; False for a refused or failed request. Those took nothing
    away, and counting them would let a throttled account's 429s raise its own score."""
    report.read += 1
    if event.status is not None and event.status >= 400:
        report.unanswered += 1
        return False
    return True


def _event(row: _Row) -> TraceEvent:
    """Map one row of either accepted shape onto a TraceEvent (raises _Bad)."""
    ts = _time(row.ts, "ts")  # the required fields first, in contract order
    if ts is None:
        raise _Bad("missing `ts`")
    if not row.account_id:
        raise _Bad("missing `account_id`")
    body = row.request or _EMPTY_BODY
    messages = row.messages if row.messages is not None else body.messages
    if messages is None and body.input is not None:
        messages = _input_messages(body.input)
    text, user_turns = _asked(messages, row.prompt if row.prompt is not None else body.prompt)
    max_tokens = row.max_tokens
    for asked in (body.max_tokens, body.max_completion_tokens, body.max_output_tokens):
        max_tokens = asked if max_tokens is None else max_tokens
    logprobs, prompt_logprobs = row.asked()
    if row.request is not None:
        in_body = body.asked()
        logprobs, prompt_logprobs = logprobs or in_body[0], prompt_logprobs or in_body[1]
    return TraceEvent(
        ts=ts,
        account_id=row.account_id,
        text=text,
        user_turns=user_turns,
        org_id=row.org_id,
        key_id=row.key_id,
        ip=row.ip or row.client_ip,
        user_agent=row.user_agent,
        model=row.model or body.model,
        max_tokens=max_tokens,
        temperature=row.temperature if row.temperature is not None else body.temperature,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        response_chars=len(row.response_text or ""),
        status=row.status,
        conversation_id=row.conversation_id,
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
    )


_EMPTY_BODY = _Body()


def _asked(messages: list[_Message] | None, prompt: Any) -> tuple[str, int]:
    """(the last thing the user asked, how many user turns the request holds)."""
    if messages is not None:
        if not messages:
            raise _Bad("`messages` is empty")
        users = [_content(m.content) for m in messages if m.role == "user"]
        if not users:  # a system-only or assistant-prefill request: read what is there
            return _content(messages[-1].content), 0
        return users[-1], len(users)
    if prompt is not None:
        if isinstance(prompt, list):
            if not prompt or not all(isinstance(p, str) for p in prompt):
                raise _Bad("`prompt` must be a string or a list of strings")
            return prompt[-1], 1
        return prompt, 1
    raise _Bad("needs `messages` or `prompt`")


def _input_messages(given: str | list[Any]) -> list[_Message]:
    """A Responses `input` as messages: a string is one user turn; of a list, the items
    that are messages (tool calls and their output are not what a user asked)."""
    if isinstance(given, str):
        return [_Message("user", given)]
    found = [
        _Message(item["role"], content if isinstance(content, str | list) else None)
        for item in given
        if isinstance(item, dict) and isinstance(item.get("role"), str)
        for content in [item.get("content")]
    ]
    if not found:
        raise _Bad("`input` holds no message")
    return found


def _content(content: str | list[Any] | None) -> str:
    """Message content: a string, or OpenAI's list of parts (text parts joined)."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    parts = [p.get("text") for p in content if isinstance(p, dict)]
    return "\n".join(p for p in parts if isinstance(p, str))


def _time(value: str | float | None, name: str) -> float | None:
    """RFC 3339 text or Unix seconds (the gateway's export) -> Unix seconds."""
    if value is None or isinstance(value, float):
        return value
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _Bad(f"`{name}` must be an RFC 3339 time or Unix seconds, got {value!r}") from None
    if parsed.tzinfo is None:
        raise _Bad(f"`{name}` {value!r} has no time zone (RFC 3339 needs one, e.g. Z)")
    return parsed.timestamp()


def _why(exc: Exception) -> str:
    text = str(exc)
    return text.replace("`$.", "`").replace(" - at ", " at ") if text else type(exc).__name__


def _rows(path: Path, report: InputReport, shape: type) -> Iterator[tuple[int, Any]]:
    decoder = msgspec.json.Decoder(shape)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise TraceInputError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield number, decoder.decode(line)
            except msgspec.ValidationError as exc:
                report.reject(number, _why(exc))
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # releases differ
                report.reject(number, f"not JSON ({exc})")
