"""A fast fake OpenAI-compatible upstream for tests and the gateway benchmark.

A bare ASGI callable (no framework) so that, in the benchmark, the upstream
costs as little CPU as possible. Behaviour is steered by the request's model
name, so tests can ask for failures through the real gateway:

* ``slow-<seconds>``: wait before answering (timeouts, cancelled streams);
* ``fail-500``: answer HTTP 500; ``drop``: close mid-stream;
* ``bad-usage``: a ``usage`` block whose counts are not integers;
* ``echo-fields``: the answer is the JSON of the fields in ``ECHOED`` it received (null when
  absent), to show what the gateway lets through;
* ``long-<tokens>``: the fixed answer, its ``usage`` claiming that many completion tokens
  (what a long answer costs and what tracing reads, without sending it);
* anything else: a fixed answer with a ``usage`` block (5 completion tokens).

Run it: ``python tests/fake_upstream.py PORT``.
"""

from __future__ import annotations

import asyncio
import sys
import time

import msgspec

WORDS = ["The", " answer", " is", " forty", "-two."]
COMPLETION_TOKENS = len(WORDS)
ECHOED = (
    "vllm_xargs",
    "watermarking",
    "logprobs",
    "top_logprobs",
    "prompt_logprobs",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "kv_transfer_params",
    "request_id",
    "include",
    "max_output_tokens",
)


def _json(status: int, payload: object):
    body = msgspec.json.encode(payload)
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if scope["method"] == "GET" and path == "/v1/models":
        data = {
            "object": "list",
            "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "test"}],
        }
        for message in _json(200, data):
            await send(message)
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    request = msgspec.json.decode(body) if body else {}
    model = str(request.get("model", ""))
    if model.startswith("slow-"):
        await asyncio.sleep(float(model[5:]))
    if model == "fail-500":
        for message in _json(500, {"error": {"message": "boom", "type": "server_error"}}):
            await send(message)
        return
    if model == "unknown-model":
        error = {
            "error": {
                "message": "no such model",
                "type": "invalid_request_error",
                "param": None,
                "code": "model_not_found",
            }
        }
        for message in _json(404, error):
            await send(message)
        return
    prompt_tokens = 7
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": prompt_tokens + COMPLETION_TOKENS,
    }
    if model == "bad-usage":
        usage = {"prompt_tokens": "7", "completion_tokens": 5.5, "total_tokens": None}
    if model.startswith("long-"):
        claimed = int(model[5:])
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": claimed,
            "total_tokens": prompt_tokens + claimed,
        }
    created = int(time.time())
    if path == "/v1/embeddings":
        data = {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
        for message in _json(200, data):
            await send(message)
        return
    if path == "/v1/responses":
        await _responses(send, request, model, created, prompt_tokens)
        return
    chat = path == "/v1/chat/completions"
    if not request.get("stream"):
        text = "".join(WORDS)
        if model == "echo-fields":
            text = msgspec.json.encode({name: request.get(name) for name in ECHOED}).decode()
        choice = (
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            if chat
            else {"index": 0, "text": text, "finish_reason": "stop"}
        )
        data = {
            "id": "cmpl-fake",
            "object": "chat.completion" if chat else "text_completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": usage,
        }
        for message in _json(200, data):
            await send(message)
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )
    for i, word in enumerate(WORDS):
        if model == "drop" and i == 2:
            raise RuntimeError("upstream dropped the stream")  # uvicorn closes the connection
        choice = (
            {"index": 0, "delta": {"content": word}, "finish_reason": None}
            if chat
            else {"index": 0, "text": word, "finish_reason": None}
        )
        chunk = {
            "id": "cmpl-fake",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [choice],
        }
        await send(
            {
                "type": "http.response.body",
                "body": b"data: " + msgspec.json.encode(chunk) + b"\n\n",
                "more_body": True,
            }
        )
        if model.startswith("slow-"):
            await asyncio.sleep(float(model[5:]))
    if (request.get("stream_options") or {}).get("include_usage"):
        chunk = {
            "id": "cmpl-fake",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        }
        await send(
            {
                "type": "http.response.body",
                "body": b"data: " + msgspec.json.encode(chunk) + b"\n\n",
                "more_body": True,
            }
        )
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


async def _responses(send, request: dict, model: str, created: int, prompt_tokens: int) -> None:
    """OpenAI's Responses API: a `response` object, or its typed events (with `event:`
    lines, as OpenAI sends them) ending in `response.completed` with the usage."""
    text = "".join(WORDS)
    if model == "echo-fields":
        text = msgspec.json.encode({name: request.get(name) for name in ECHOED}).decode()
    usage = {"input_tokens": prompt_tokens, "output_tokens": COMPLETION_TOKENS}
    usage["total_tokens"] = prompt_tokens + COMPLETION_TOKENS
    item = {"type": "message", "id": "msg_fake", "status": "completed", "role": "assistant"}
    item["content"] = [{"type": "output_text", "text": text, "annotations": []}]
    whole = {"id": "resp_fake", "object": "response", "created_at": created, "model": model}
    whole |= {"status": "completed", "output": [item], "usage": usage}
    whole |= {"parallel_tool_calls": False, "tool_choice": "auto", "tools": []}
    if not request.get("stream"):
        for message in _json(200, whole):
            await send(message)
        return
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    where = {"item_id": "msg_fake", "output_index": 0, "content_index": 0, "logprobs": []}
    events = [{"type": "response.created", "response": {**whole, "status": "in_progress"}}]
    events += [{"type": "response.output_text.delta", **where, "delta": w} for w in WORDS]
    events += [{"type": "response.completed", "response": whole}]
    for number, event in enumerate(events):
        line = b"event: " + event["type"].encode() + b"\ndata: "
        body = line + msgspec.json.encode({**event, "sequence_number": number}) + b"\n\n"
        await send({"type": "http.response.body", "body": body, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
