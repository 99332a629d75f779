"""The request bodies the gateway validates: OpenAI's, as typed msgspec structs.

Validation is strict where a wrong type would change admission (token counts,
``max_tokens``, ``n``, ``stream``) and lenient elsewhere: unknown fields are
kept and forwarded, so new OpenAI parameters pass through without a release.
The same structs generate the OpenAPI schema (`openapi.py`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct

from distillguard.gateway.errors import ApiError

PositiveInt = Annotated[int, Meta(ge=1)]
S = TypeVar("S", bound=Struct)
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class ContentPart(Struct):
    type: str
    text: str | None = None


class Message(Struct):
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content or ())


class StreamOptions(Struct):
    include_usage: bool = False


class Sampling(Struct, kw_only=True):
    """Parameters chat and text completions share."""

    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: PositiveInt | None = None
    n: Annotated[int, Meta(ge=1, le=128)] = 1
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Meta(gt=0.0, le=1.0)] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None

    @property
    def requested_tokens(self) -> int | None:
        return self.max_tokens


class ChatCompletionRequest(Sampling, kw_only=True):
    model: Annotated[str, Meta(min_length=1)]
    messages: Annotated[list[Message], Meta(min_length=1)]
    max_completion_tokens: PositiveInt | None = None

    @property
    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


# One prompt, several prompts, or pre-tokenised prompt(s): OpenAI's four shapes.
PromptInput = str | list[str | int | list[int]]


class CompletionRequest(Sampling, kw_only=True):
    model: Annotated[str, Meta(min_length=1)]
    prompt: PromptInput


class InputItem(Struct):
    """One item of a Responses `input`: a message (role and content) or another item
    (a tool call's output, a reasoning item), kept and forwarded as sent."""

    type: str | None = None
    role: Role | None = None
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content or ())


class ResponsesRequest(Struct, kw_only=True):
    """OpenAI's Responses API (`/v1/responses`): `input` is a string or a list of items,
    `instructions` a system message, `max_output_tokens` the answer's cap; one answer each."""

    model: Annotated[str, Meta(min_length=1)]
    input: str | Annotated[list[InputItem], Meta(min_length=1)]
    instructions: str | None = None
    stream: bool = False
    max_output_tokens: PositiveInt | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Meta(gt=0.0, le=1.0)] | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    include: list[str] | None = None
    user: str | None = None

    stream_options = None  # usage comes in the stream's last event: nothing to ask for
    n = 1

    @property
    def requested_tokens(self) -> int | None:
        return self.max_output_tokens


class EmbeddingRequest(Struct):
    model: Annotated[str, Meta(min_length=1)]
    input: PromptInput
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: PositiveInt | None = None
    user: str | None = None


Request = ChatCompletionRequest | CompletionRequest | EmbeddingRequest | ResponsesRequest
_PARAM = re.compile(r"at `\$\.?([^`]*)`")
# No OpenAI request nests past a handful of levels; the body is stored, forwarded and
# re-encoded by recursive code downstream, so anything deeper is refused here.
MAX_DEPTH = 400


def decode(body: bytes, kind: type[S]) -> tuple[S, dict[str, Any]]:
    """A JSON object body as `kind` and as the raw object, or a 400 naming the bad field."""
    try:
        raw = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise _undecodable(body, exc) from None
    if not isinstance(raw, dict):
        raise ApiError(400, "the request body must be a JSON object", "invalid_json")
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and too_deep(raw, MAX_DEPTH):
        raise _nested_too_deep()
    try:
        typed = msgspec.convert(raw, kind)
    except msgspec.ValidationError as exc:
        match = _PARAM.search(str(exc))
        param = match.group(1) if match and match.group(1) else None
        raise ApiError(400, f"invalid request: {exc}", "invalid_request", param) from None
    return typed, raw


def _undecodable(body: bytes, exc: Exception) -> ApiError:
    # Decoders differ (and change between releases) in what they raise for bad UTF-8,
    # so the bytes themselves decide which error this is.
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return ApiError(400, "the request body is not valid UTF-8", "invalid_encoding")
    if isinstance(exc, RecursionError):
        return _nested_too_deep()
    return ApiError(400, f"the request body is not valid JSON: {exc}", "invalid_json")


def _nested_too_deep() -> ApiError:
    return ApiError(
        400, f"the request body nests deeper than {MAX_DEPTH} levels", "nesting_too_deep"
    )


def too_deep(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest deeper than `limit` (the top level is 1); iterative."""
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def parse(body: bytes, kind: type[Request]) -> tuple[Request, dict[str, Any]]:
    """The typed request and the raw JSON object (forwarded as is), or a 400."""
    typed, raw = decode(body, kind)
    _check_prompt_shape(typed)
    return typed, raw


def _check_prompt_shape(request: Request) -> None:
    """Prompts must be homogeneous: all strings, all token ids, or all id lists."""
    if isinstance(request, ResponsesRequest | ChatCompletionRequest):
        return
    value = request.prompt if isinstance(request, CompletionRequest) else request.input
    if isinstance(value, list):
        if not value:
            field = "prompt" if isinstance(request, CompletionRequest) else "input"
            raise ApiError(400, f"`{field}` must not be empty", "invalid_request", field)
        kinds = {type(item) for item in value}
        if len(kinds) > 1:
            field = "prompt" if isinstance(request, CompletionRequest) else "input"
            raise ApiError(
                400,
                f"`{field}` must be a string, a list of strings, a list of token ids "
                "or a list of token-id lists, not a mix",
                "invalid_request",
                field,
            )


def prompt_texts(request: Request) -> tuple[list[str], int]:
    """(texts to tokenise, tokens already given as ids) of any request."""
    if isinstance(request, ChatCompletionRequest):
        return [m.text() for m in request.messages], 0
    if isinstance(request, ResponsesRequest):
        given = [request.input] if isinstance(request.input, str) else request.input
        texts = [i if isinstance(i, str) else i.text() for i in given]
        return ([request.instructions] if request.instructions else []) + texts, 0
    value = request.prompt if isinstance(request, CompletionRequest) else request.input
    if isinstance(value, str):
        return [value], 0
    texts = [v for v in value if isinstance(v, str)]
    ids = sum(1 for v in value if isinstance(v, int))
    ids += sum(len(v) for v in value if isinstance(v, list))
    return texts, ids
