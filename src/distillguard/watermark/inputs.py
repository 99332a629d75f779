"""Reading texts to test from files: plain text, or JSONL with text or token ids.

Everything is parsed and validated before anything is scored, so a bad input
fails the whole command with one message and no partial output.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from distillguard.errors import DistillguardError

TEXT_FIELDS = ("text", "response", "completion", "output", "response_text")  # last: events


@dataclass(frozen=True)
class DetectionInput:
    name: str  # "file.txt" or "file.jsonl:3"
    text: str | None = None
    token_ids: list[int] | None = None
    prompt: str | None = None
    prompt_ids: list[int] | None = None
    cohort: int | None = None  # the gateway's event export records each answer's cohort

    @property
    def needs_tokenizer(self) -> bool:
        return self.token_ids is None or (self.prompt is not None and self.prompt_ids is None)


def read_inputs(
    paths: list[str], skipped: list[tuple[str, str]] | None = None
) -> list[DetectionInput]:
    """Every input, or one error for the first bad one. Given `skipped`, a JSON line that
    cannot be tested (an event with no answer text, say) is noted there as (name, reason)
    instead, and the rest are read."""
    items: list[DetectionInput] = []
    for path in paths:
        items.extend(_read_one(path, skipped))
    return items


def _read_one(path: str, skipped: list[tuple[str, str]] | None) -> list[DetectionInput]:
    raw = _read_text(path)
    if path.endswith(".jsonl"):
        lines = [(n, line) for n, line in enumerate(raw.split("\n"), 1) if line.strip()]
        if not lines:
            raise DistillguardError(f"{path}: no JSON lines to test")
        items = []
        for n, line in lines:
            try:
                items.append(_from_json(f"{path}:{n}", line))
            except DistillguardError as exc:
                if skipped is None:
                    raise
                skipped.append((f"{path}:{n}", str(exc).split(": ", 1)[-1]))
        return items
    if not raw.strip():
        raise DistillguardError(f"{path}: empty text, nothing to test")
    return [DetectionInput(name=path, text=raw)]


def _read_text(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DistillguardError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DistillguardError(f"{path}: is a directory") from None
    except UnicodeDecodeError:
        raise DistillguardError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise DistillguardError(f"{path}: {exc.strerror}") from None


def _from_json(name: str, line: str) -> DetectionInput:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DistillguardError(f"{name}: invalid JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise DistillguardError(f"{name}: expected a JSON object")
    token_ids = _int_list(name, record, "token_ids")
    prompt_ids = _int_list(name, record, "prompt_ids")
    text = next((record[f] for f in TEXT_FIELDS if isinstance(record.get(f), str)), None)
    if token_ids is None and text is None:
        fields = ", ".join(("token_ids", *TEXT_FIELDS))
        raise DistillguardError(f"{name}: needs one of the fields {fields}")
    if token_ids is None and not str(text).strip():
        raise DistillguardError(f"{name}: empty text, nothing to test")
    cohort = record.get("cohort")
    if cohort is not None and (isinstance(cohort, bool) or not isinstance(cohort, int)):
        raise DistillguardError(f"{name}: 'cohort' must be an integer")
    prompt = _prompt_text(name, record.get("prompt"))
    return DetectionInput(name, text, token_ids, prompt, prompt_ids, cohort)


def _prompt_text(name: str, prompt: object) -> str | None:
    """A prompt string, or chat messages joined (only their windows matter for exclusion)."""
    if prompt is None or isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(
        isinstance(m, dict) and isinstance(m.get("content"), str) for m in prompt
    ):
        return "\n".join(m["content"] for m in prompt)
    raise DistillguardError(f"{name}: 'prompt' must be a string or a list of chat messages")


def _int_list(name: str, record: dict, field: str) -> list[int] | None:
    value = record.get(field)
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise DistillguardError(f"{name}: '{field}' must be a list of integers")
    return value


def tokenize_inputs(
    items: list[DetectionInput], encode: Callable[[str], list[int]] | None
) -> list[tuple[list[int], list[int] | None]]:
    """(token ids, prompt ids) for every input, using `encode` where text is given."""
    pairs = []
    for item in items:
        ids, prompt_ids = item.token_ids, item.prompt_ids
        if item.needs_tokenizer:
            if encode is None:
                raise DistillguardError(f"{item.name}: text input needs a tokenizer")
            if ids is None:
                ids = encode(item.text or "")
            if item.prompt is not None and prompt_ids is None:
                prompt_ids = encode(item.prompt)
        pairs.append((ids, prompt_ids))
    return pairs
