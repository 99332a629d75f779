"""The demo's synthetic backend: an OpenAI-compatible upstream that answers at once.

Most of the demo's traffic is a simulated provider's day; generating it with a real model
would take hours on a CPU. This upstream answers every chat or completion request with a
short placeholder whose `usage` reports the answer's length: the simulator's choice
(`metadata.answer_tokens`, default 256), never more than the request's `max_tokens` (which
the gateway may have lowered for a throttled account). That length is what limits and
tracing read, at no generation cost. Requests naming the
bundled model never reach it (the gateway answers those itself, watermarked).

Run it alone: ``python -m distillguard.demo.synthetic --port 8101``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MODEL = "dg-synthetic"
DEFAULT_TOKENS = 256


def _answer_tokens(body: dict[str, Any]) -> int:
    metadata = body.get("metadata")
    wanted = metadata.get("answer_tokens") if isinstance(metadata, dict) else None
    tokens = int(wanted) if isinstance(wanted, str) and wanted.isdigit() else DEFAULT_TOKENS
    cap = body.get("max_tokens") or body.get("max_completion_tokens")
    return max(1, min(tokens, cap) if isinstance(cap, int) and cap > 0 else tokens)


async def models(_: Request) -> JSONResponse:
    return JSONResponse(
        {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "demo"}]}
    )


async def complete(request: Request) -> JSONResponse:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return _error(400, "the body must be a JSON object")
    if body.get("stream"):
        return _error(400, "the synthetic backend does not stream")
    tokens = _answer_tokens(body)
    text = f"[a synthetic answer of {tokens} tokens]"
    chat = request.url.path.endswith("/chat/completions")
    choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return JSONResponse(
        {
            "id": f"synthetic-{time.monotonic_ns()}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": body.get("model") or MODEL,
            "choices": [choice],
            # No prompt count: the gateway counts the prompt with the bundled tokenizer.
            "usage": {"completion_tokens": tokens},
        }
    )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error", "code": None}}, status
    )


app = Starlette(
    routes=[
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", complete, methods=["POST"]),
        Route("/v1/completions", complete, methods=["POST"]),
    ]
)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
