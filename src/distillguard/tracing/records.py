"""Tracing's input: request events and account records, read from JSONL or the store.

The contract is in docs/tracing.md. Two shapes of event are accepted and
mapped onto one `TraceEvent`: the documented tracing JSONL (`ts` in RFC 3339,
`messages` or `prompt` at the top level) and the gateway's own event log
(`ts` in Unix seconds, the body under `request`, `client_ip`), as
`distillguard events export` writes it. A bad line never stops a run: it is
reported with its line number and the good lines are still used.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from distillguard.errors import DistillguardError

# How many bad lines are described one by one; the rest are only counted.
MAX_REPORTED = 20


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

    def reject(self, line: int, why: str) -> None:
        self.bad += 1
        if len(self.problems) < MAX_REPORTED:
            self.problems.append(f"{self.path}:{line}: {why}")

    def summary(self) -> str:
        text = f"{self.path}: {self.read} records read, {self.bad} bad lines skipped"
        more = self.bad - len(self.problems)
        return text + (f" ({more} more not listed)" if more > 0 else "")


class _Bad(Exception):
    """One line's problem; becomes a numbered line in the report."""


def read_events(path: Path, report: InputReport | None = None) -> Iterator[TraceEvent]:
    """Events of a JSONL file in file order; bad lines go to `report`."""
    report = report or InputReport(str(path))
    for number, row in _json_lines(path, report):
        try:
            event = event_from_row(row)
        except _Bad as exc:
            report.reject(number, str(exc))
            continue
        report.read += 1
        yield event


def read_accounts(path: Path, report: InputReport | None = None) -> dict[str, AccountRecord]:
    report = report or InputReport(str(path))
    accounts: dict[str, AccountRecord] = {}
    for number, row in _json_lines(path, report):
        try:
            record = AccountRecord(
                account_id=_text(row, "account_id", required=True),
                org_id=_text(row, "org_id"),
                created_at=_time(row, "created_at"),
                email=_text(row, "email"),
                payment_fingerprint=_text(row, "payment_fingerprint"),
                country=_text(row, "country"),
                signup_ip=_text(row, "signup_ip"),
            )
        except _Bad as exc:
            report.reject(number, str(exc))
            continue
        report.read += 1
        accounts[record.account_id] = record
    return accounts


def event_from_row(row: dict[str, Any]) -> TraceEvent:
    """Map one row of either accepted shape onto a TraceEvent (raises _Bad)."""
    body = row.get("request")
    body = body if isinstance(body, dict) else {}

    def pick(name: str, alias: str | None = None) -> Any:
        for source, key in ((row, name), (row, alias), (body, name)):
            if key is not None and source.get(key) is not None:
                return source[key]
        return None

    ts = _time(row, "ts", required=True)  # the required fields first, in contract order
    account_id = _text(row, "account_id", required=True)
    text, user_turns = _asked(pick("messages"), pick("prompt"))
    response = pick("response_text")
    if response is not None and not isinstance(response, str):
        raise _Bad("`response_text` must be a string")
    return TraceEvent(
        ts=ts,
        account_id=account_id,
        text=text,
        user_turns=user_turns,
        org_id=_text(row, "org_id"),
        key_id=_text(row, "key_id"),
        ip=_text({"ip": pick("ip", "client_ip")}, "ip"),
        user_agent=_text(row, "user_agent"),
        model=_text({"model": pick("model")}, "model"),
        max_tokens=_int({"max_tokens": pick("max_tokens", "max_completion_tokens")}, "max_tokens"),
        temperature=_number({"temperature": pick("temperature")}, "temperature"),
        prompt_tokens=_int(row, "prompt_tokens"),
        completion_tokens=_int(row, "completion_tokens"),
        response_chars=len(response or ""),
        status=_int(row, "status"),
        conversation_id=_text(row, "conversation_id"),
    )


def _asked(messages: Any, prompt: Any) -> tuple[str, int]:
    """(the last thing the user asked, how many user turns the request holds)."""
    if messages is not None:
        if not isinstance(messages, list) or not messages:
            raise _Bad("`messages` must be a non-empty list of {role, content}")
        users: list[str] = []
        for message in messages:
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise _Bad("every message needs a `role` string and `content`")
            if message["role"] == "user":
                users.append(_content(message.get("content")))
        if not users:  # a system-only or assistant-prefill request: read what is there
            return _content(messages[-1].get("content")), 0
        return users[-1], len(users)
    if prompt is not None:
        if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            return prompt[-1], 1
        if not isinstance(prompt, str):
            raise _Bad("`prompt` must be a string")
        return prompt, 1
    raise _Bad("needs `messages` or `prompt`")


def _content(content: Any) -> str:
    """Message content: a string, or OpenAI's list of parts (text parts joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return "\n".join(p for p in parts if isinstance(p, str))
    if content is None:
        return ""
    raise _Bad("message `content` must be a string or a list of parts")


def _text(row: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = row.get(name)
    if value is None:
        if required:
            raise _Bad(f"missing `{name}`")
        return None
    if not isinstance(value, str) or (required and not value):
        raise _Bad(
            f"`{name}` must be a non-empty string" if required else f"`{name}` must be a string"
        )
    return value


def _int(row: dict[str, Any], name: str) -> int | None:
    value = row.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"`{name}` must be an integer")
    return value


def _number(row: dict[str, Any], name: str) -> float | None:
    value = row.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f"`{name}` must be a number")
    return float(value)


def _time(row: dict[str, Any], name: str, required: bool = False) -> float | None:
    """RFC 3339 text or Unix seconds (the gateway's export) -> Unix seconds."""
    value = row.get(name)
    if value is None:
        if required:
            raise _Bad(f"missing `{name}`")
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed.timestamp()
            raise _Bad(f"`{name}` {value!r} has no time zone (RFC 3339 needs one, e.g. Z)")
    raise _Bad(f"`{name}` must be an RFC 3339 time or Unix seconds, got {value!r}")


_decoder = msgspec.json.Decoder()


def _json_lines(path: Path, report: InputReport) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise TraceInputError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = _decoder.decode(line)
            except msgspec.DecodeError as exc:
                report.reject(number, f"not JSON ({exc})")
                continue
            except UnicodeDecodeError:
                report.reject(number, "not UTF-8")
                continue
            if not isinstance(row, dict):
                report.reject(number, "a line must be a JSON object")
                continue
            yield number, row


def events_from_rows(rows: Iterable[dict[str, Any]], report: InputReport) -> Iterator[TraceEvent]:
    """Events from the store's rows (the gateway's event log); unusable rows are counted."""
    for row in rows:
        if row.get("account_id") is None or row.get("request") is None:
            continue  # unauthenticated or unparsable requests: nobody to trace
        try:
            event = event_from_row(row)
        except _Bad as exc:
            report.reject(int(row.get("id") or 0), str(exc))
            continue
        report.read += 1
        yield event
