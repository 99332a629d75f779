"""The bundled model behind the gateway: OpenAI-shaped answers, watermarked per cohort.

Generation runs on one worker thread (the model is CPU-bound; a second thread
would only contend with the first), so the event loop keeps serving other
requests meanwhile. Streamed answers are sent token by token as the model
samples them; a client that goes away stops the generation at the next token.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from distillguard.config import GenerationSettings
from distillguard.engine.transformers_engine import ChatPrompt, Completion, TransformersEngine
from distillguard.gateway.backends import responses
from distillguard.gateway.backends.base import Reply
from distillguard.gateway.errors import ApiError
from distillguard.watermark.cohorts import Cohorts

MODEL_NAME = "smollm2-135m-instruct"


class _Cancelled(Exception):
    """Raised inside generation when the client of a stream has gone."""


class _TokenFeed:
    """A `transformers` streamer that hands new token ids to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        self.loop, self.queue = loop, queue
        self.prompt_seen = False
        self.cancelled = False

    def put(self, value) -> None:
        if self.cancelled:
            raise _Cancelled
        if not self.prompt_seen:  # generate() first hands over the prompt itself
            self.prompt_seen = True
            return
        self.loop.call_soon_threadsafe(self.queue.put_nowait, value.reshape(-1).tolist())

    def end(self) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, None)


class BundledBackend:
    """The gateway's backend for `serve --engine bundled`."""

    def __init__(
        self, engine: TransformersEngine, cohorts: Cohorts, generation: GenerationSettings
    ) -> None:
        self.engine = engine
        self.cohorts = cohorts
        self.generation = generation
        self.models_served = {MODEL_NAME}
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="bundled-model")
        for cohort in range(cohorts.count):  # fail at start, not on a request
            engine.check_watermark(cohorts.watermark(cohort))

    async def models(self) -> Reply:
        data = {
            "object": "list",
            "data": [
                {"id": MODEL_NAME, "object": "model", "created": 0, "owned_by": "distillguard"}
            ],
        }
        return Reply(200, msgspec.json.encode(data), data)

    async def complete(self, endpoint: str, payload: dict[str, Any], cohort: int | None) -> Reply:
        prompt, args = self._request(endpoint, payload, cohort)
        loop = asyncio.get_running_loop()
        started = int(time.time())
        completions = await loop.run_in_executor(
            self._worker, lambda: self.engine.generate([prompt] * args.pop("n"), **args)
        )
        if endpoint == "/responses":
            data = responses.answer(completions[0], MODEL_NAME, started)
        else:
            data = _answer(endpoint, completions, started)
        return Reply(200, msgspec.json.encode(data), data)

    async def stream(
        self, endpoint: str, payload: dict[str, Any], cohort: int | None
    ) -> AsyncIterator[bytes | Reply]:
        prompt, args = self._request(endpoint, payload, cohort)
        if args.pop("n") != 1:
            raise ApiError(400, "the bundled engine streams one choice (n=1)", "unsupported", "n")
        created = int(time.time())
        pieces = self._pieces(prompt, args)
        if endpoint == "/responses":
            async for event in responses.events(pieces, MODEL_NAME, created):
                yield event
            return
        chunk_id = f"chatcmpl-{secrets.token_hex(12)}"
        chat = endpoint == "/chat/completions"
        if chat:  # OpenAI's first chunk says who speaks, before any text
            yield _chunk(chunk_id, created, chat, "", None, role="assistant")
        async for piece in pieces:
            if isinstance(piece, str):
                yield _chunk(chunk_id, created, chat, piece, None)
            else:
                completion = piece
        yield _chunk(chunk_id, created, chat, "", completion.finish_reason)
        usage = _usage([completion])
        yield msgspec.json.encode(
            {
                "id": chunk_id,
                "object": _object(chat, True),
                "created": created,
                "model": MODEL_NAME,
                "choices": [],
                "usage": usage,
            }
        )

    async def _pieces(
        self, prompt: ChatPrompt | str, args: dict[str, Any]
    ) -> AsyncIterator[str | Completion]:
        """The answer's text as the model samples it (whole characters only), then the
        finished Completion; a client that goes away stops the model at its next token."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        feed = _TokenFeed(loop, queue)
        job = loop.run_in_executor(
            self._worker, lambda: self.engine.generate([prompt], streamer=feed, **args)
        )
        stop_ids = set(self.engine.tokenizer.all_special_ids)
        ids: list[int] = []
        sent = ""
        try:
            while (new := await queue.get()) is not None:
                ids.extend(t for t in new if t not in stop_ids)
                text = self.engine.tokenizer.decode(ids, skip_special_tokens=True)
                if text.endswith("\ufffd") or len(text) <= len(sent):
                    continue  # an incomplete UTF-8 sequence: wait for the next token
                yield text[len(sent) :]
                sent = text
            completion: Completion = (await job)[0]
        finally:
            feed.cancelled = True
        if len(completion.text) > len(sent):
            yield completion.text[len(sent) :]
        yield completion

    async def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)

    def _request(
        self, endpoint: str, payload: dict[str, Any], cohort: int | None
    ) -> tuple[ChatPrompt | str, dict[str, Any]]:
        if endpoint == "/embeddings":
            raise ApiError(400, "the bundled engine serves no embeddings model", "unsupported")
        for name in UNSUPPORTED:
            if payload.get(name) not in NOT_ASKED:
                raise ApiError(
                    400, f"the bundled engine does not support `{name}`", "unsupported", name
                )
        if endpoint == "/chat/completions":
            prompt: ChatPrompt | str = [
                {"role": m["role"], "content": _content(m.get("content"))}
                for m in payload["messages"]
            ]
        elif endpoint == "/responses":
            prompt = responses.prompt_of(payload)
        else:
            value = payload["prompt"]
            if isinstance(value, list) and len(value) == 1:  # LangChain's OpenAI sends a list
                value = value[0]
            if not isinstance(value, str):
                raise ApiError(
                    400,
                    "the bundled engine takes one text prompt (a string, or a list of one)",
                    "unsupported",
                    "prompt",
                )
            prompt = value
        requested = (
            payload.get("max_output_tokens")
            or payload.get("max_completion_tokens")
            or payload.get("max_tokens")
        )
        temperature = payload.get("temperature")
        args: dict[str, Any] = {
            "max_new_tokens": requested or self.generation.max_new_tokens,
            "temperature": self.generation.temperature if temperature is None else temperature,
            "top_p": payload.get("top_p") or self.generation.top_p,
            "watermark": self.cohorts.watermark(cohort if cohort is not None else 0),
            "batch_size": self.generation.batch_size,
            "seed": payload.get("seed"),
            "n": payload.get("n") or 1,
        }
        if args["temperature"] == 0:
            args["temperature"] = 1e-3  # OpenAI's "greedy"; the sampler needs a positive value
        return prompt, args


# OpenAI parameters that change the answer and that the bundled engine does not implement:
# a clear 400 rather than an answer that silently ignores them. (Unknown fields pass, as
# everywhere in the gateway.)
UNSUPPORTED = (
    "logprobs",
    "top_logprobs",
    "prompt_logprobs",
    "stop",
    "logit_bias",
    "presence_penalty",
    "frequency_penalty",
    "tools",
    "functions",
    "response_format",
    "suffix",
    "echo",
    "best_of",
)
NOT_ASKED = (None, False, 0, "", [], {})  # the defaults: asking for nothing is fine


def _content(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    return content or ""


def _object(chat: bool, chunk: bool) -> str:
    if chat:
        return "chat.completion.chunk" if chunk else "chat.completion"
    return "text_completion"


def _usage(completions: list[Completion]) -> dict[str, int]:
    prompt = len(completions[0].prompt_ids)
    completion = sum(len(c.completion_ids) for c in completions)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _answer(endpoint: str, completions: list[Completion], created: int) -> dict[str, Any]:
    chat = endpoint == "/chat/completions"
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": c.text},
            "finish_reason": c.finish_reason,
        }
        if chat
        else {"index": i, "text": c.text, "finish_reason": c.finish_reason, "logprobs": None}
        for i, c in enumerate(completions)
    ]
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{secrets.token_hex(12)}",
        "object": _object(chat, False),
        "created": created,
        "model": MODEL_NAME,
        "choices": choices,
        "usage": _usage(completions),
    }


def _chunk(
    chunk_id: str,
    created: int,
    chat: bool,
    text: str,
    finish: str | None,
    role: str | None = None,
) -> bytes:
    delta: dict[str, Any] = {"role": role} if role else {}
    if text or role:
        delta["content"] = text
    choice: dict[str, Any] = (
        {"index": 0, "delta": delta, "finish_reason": finish}
        if chat
        else {"index": 0, "text": text, "finish_reason": finish}
    )
    return msgspec.json.encode(
        {
            "id": chunk_id,
            "object": _object(chat, True),
            "created": created,
            "model": MODEL_NAME,
            "choices": [choice],
        }
    )
