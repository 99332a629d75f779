"""Reading prompt files: JSONL lines with `prompt`, `turns` (first user turn) or `messages`."""

from __future__ import annotations

import json
from pathlib import Path

from distillguard.engine.transformers_engine import ChatPrompt
from distillguard.errors import DistillguardError


def read_lines(path: Path) -> list[str]:
    """A UTF-8 text file's lines, or one clear error (prompt files, answer corpora)."""
    try:
        return path.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        raise DistillguardError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DistillguardError(f"{path}: cannot read ({exc})") from None


def read_prompts(path: Path, limit: int | None = None) -> list[ChatPrompt]:
    lines = read_lines(path)
    prompts: list[ChatPrompt] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        prompts.append(_parse(f"{path}:{number}", line))
        if limit is not None and len(prompts) >= limit:
            break
    if not prompts:
        raise DistillguardError(f"{path}: no prompts found")
    return prompts


def _parse(where: str, line: str) -> ChatPrompt:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DistillguardError(f"{where}: invalid JSON ({exc.msg})") from None
    if isinstance(record, dict):
        prompt = record.get("prompt")
        if isinstance(prompt, str) and prompt.strip():
            return prompt
        turns = record.get("turns")
        if isinstance(turns, list) and turns and isinstance(turns[0], str) and turns[0].strip():
            return turns[0]  # later turns were written against replies we do not have
        messages = record.get("messages")
        if (
            isinstance(messages, list)
            and messages
            and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)
        ):
            return messages
    raise DistillguardError(f"{where}: needs a non-empty 'prompt', 'turns' or 'messages' field")
