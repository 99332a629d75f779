"""Our watermarked answers, as a suspect test reads them.

Two JSONL shapes, told apart line by line:

* the gateway's event log (`distillguard events export`): `request` (the OpenAI body,
  its `messages` or `prompt`) and `response_text`, with `account_id` and `cohort`;
* plain pairs: `{"prompt": ..., "response": ...}` (what `generate --json` and most
  harvest dumps look like); `messages` may stand for `prompt`.

Lines without an answer (refused or failed requests) are skipped and counted; a line
that is not JSON, or has neither shape, fails the whole read with its line number, so
no verdict is ever built on half a corpus.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillguard.engine.prompts import read_lines
from distillguard.engine.transformers_engine import ChatPrompt
from distillguard.errors import DistillguardError


@dataclass(frozen=True)
class Answer:
    prompt: ChatPrompt
    response: str
    account_id: str | None = None
    cohort: int | None = None
    token_ids: list[int] | None = None  # the answer as generated (`generate --json`)


@dataclass
class Corpus:
    answers: list[Answer]
    skipped: int = 0  # lines without an answer


def read_corpus(path: Path, limit: int | None = None) -> Corpus:
    lines = read_lines(path)
    corpus = Corpus([])
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DistillguardError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
        answer = _answer(record)
        if answer is None:
            if not _is_event(record) and not _is_pair(record):
                raise DistillguardError(
                    f"{path}:{number}: needs an event (`request` + `response_text`) or a "
                    "pair (`prompt` or `messages` + `response`)"
                )
            corpus.skipped += 1
            continue
        corpus.answers.append(answer)
        if limit is not None and len(corpus.answers) >= limit:
            break
    if not corpus.answers:
        raise DistillguardError(f"{path}: no answers to test")
    return corpus


def _is_event(record: Any) -> bool:
    return isinstance(record, dict) and "request" in record and "response_text" in record


def _is_pair(record: Any) -> bool:
    return isinstance(record, dict) and "response" in record


def _answer(record: Any) -> Answer | None:
    if not isinstance(record, dict):
        return None
    if _is_event(record):
        body = record.get("request") if isinstance(record.get("request"), dict) else {}
        prompt = _prompt(body.get("messages")) or _prompt(body.get("prompt"))
        response = record.get("response_text")
    else:
        prompt = _prompt(record.get("prompt")) or _prompt(record.get("messages"))
        response = record.get("response")
    if prompt is None or not isinstance(response, str) or not response.strip():
        return None
    account, cohort, ids = record.get("account_id"), record.get("cohort"), record.get("token_ids")
    return Answer(
        prompt,
        response,
        account if isinstance(account, str) else None,
        cohort if isinstance(cohort, int) and not isinstance(cohort, bool) else None,
        ids if isinstance(ids, list) and ids and all(type(i) is int for i in ids) else None,
    )


def _prompt(value: Any) -> ChatPrompt | None:
    if isinstance(value, str) and value.strip():
        return value
    if (
        isinstance(value, list)
        and value
        and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in value)
    ):
        return [{"role": str(m.get("role", "user")), "content": m["content"]} for m in value]
    return None
