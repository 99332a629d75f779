"""OpenAI's Responses API (`/v1/responses`) for the bundled engine: the request read as a
chat prompt, the answer and its stream of typed events written as OpenAI writes them (the
openai SDK's `responses.create` and `responses.stream` read them)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from distillguard.engine.transformers_engine import ChatPrompt, Completion
from distillguard.gateway.errors import ApiError

# Responses parameters the bundled engine cannot honour: a 400 naming each, not an answer
# that silently ignores it. (Its chat parameters are refused by the backend's own list.)
UNSUPPORTED = ("previous_response_id", "conversation", "background", "prompt", "reasoning")


def prompt_of(payload: dict[str, Any]) -> ChatPrompt:
    """`instructions` as the system message, then `input`: a string, or message items."""
    for name in UNSUPPORTED:
        if payload.get(name) not in (None, False, "", [], {}):
            raise ApiError(
                400, f"the bundled engine does not support `{name}`", "unsupported", name
            )
    included = payload.get("include") or []
    if any("logprobs" in str(item) for item in included):
        raise ApiError(
            400, "the bundled engine reports no log-probabilities", "unsupported", "include"
        )
    prompt: ChatPrompt = []
    if payload.get("instructions"):
        prompt.append({"role": "system", "content": payload["instructions"]})
    given = payload["input"]
    if isinstance(given, str):
        return [*prompt, {"role": "user", "content": given}]
    for item in given:
        if item.get("role") is None or item.get("type") not in (None, "message"):
            raise ApiError(
                400,
                "the bundled engine takes message items only (no tool calls or their output)",
                "unsupported",
                "input",
            )
        content = item.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text") or "" for p in content if isinstance(p, dict))
        role = "system" if item["role"] == "developer" else item["role"]
        prompt.append({"role": role, "content": content or ""})
    return prompt


def answer(completion: Completion, model: str, created: int, response_id: str = "") -> dict:
    """The whole answer as a `response` object."""
    response_id = response_id or f"resp_{secrets.token_hex(12)}"
    cut = completion.finish_reason == "length"
    prompt, output = len(completion.prompt_ids), len(completion.completion_ids)
    return {
        **_shell(response_id, model, created, "incomplete" if cut else "completed"),
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "output": [_message(f"msg_{response_id[5:]}", completion.text, "completed")],
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + output,
        },
    }


async def events(
    pieces: AsyncIterator[str | Completion], model: str, created: int
) -> AsyncIterator[bytes]:
    """The stream's typed events: created, the message item and its text part opened, one
    delta per piece of text, both closed, then `response.completed` (or `.incomplete`) with
    the whole response and its usage."""
    response_id = f"resp_{secrets.token_hex(12)}"
    item_id = f"msg_{response_id[5:]}"
    number = 0

    def event(kind: str, **fields: Any) -> bytes:
        nonlocal number
        number += 1
        return msgspec.json.encode({"type": kind, "sequence_number": number - 1, **fields})

    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    yield event("response.created", response=_shell(response_id, model, created, "in_progress"))
    yield event(
        "response.output_item.added", output_index=0, item=_message(item_id, None, "in_progress")
    )
    yield event("response.content_part.added", **where, part=_text(""))
    completion = None
    async for piece in pieces:
        if isinstance(piece, str):
            yield event("response.output_text.delta", **where, delta=piece, logprobs=[])
        else:
            completion = piece
    assert completion is not None
    done = answer(completion, model, created, response_id)
    yield event("response.output_text.done", **where, text=completion.text, logprobs=[])
    yield event("response.content_part.done", **where, part=_text(completion.text))
    yield event("response.output_item.done", output_index=0, item=done["output"][0])
    yield event(f"response.{done['status']}", response=done)


def _shell(response_id: str, model: str, created: int, status: str) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "model": model,
        "output": [],
        "parallel_tool_calls": False,
        "tool_choice": "none",
        "tools": [],
        "usage": None,
    }


def _message(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [_text(text)]
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
