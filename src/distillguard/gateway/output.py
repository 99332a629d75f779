"""What an account's tier lets it take beyond the answer: log-probabilities, samples, length.

Applied after parsing and before admission, so the tokens reserved are the tokens
the capped request can use. A refusal is OpenAI's 400 naming the parameter
(`parameter_not_allowed`); stripping and lowering are silent to the client, as a
provider's own limits are, and the event keeps what the client sent.
"""

from __future__ import annotations

from typing import Any

from distillguard.config import OutputRule
from distillguard.gateway import protocol
from distillguard.gateway.errors import ApiError
from distillguard.tracing.records import LOGIT_FIELDS, asks

# Responses API: what `include` names to get the answer's log-probabilities.
INCLUDE_LOGPROBS = "message.output_text.logprobs"
# Engine features whose answers bypass the logits processors, so no watermark: vLLM's beam
# search ranks beams by log-probabilities taken before any processor runs.
UNMARKED_FIELDS = ("use_beam_search",)


def refuse_unmarked(raw: dict[str, Any]) -> None:
    """Behind an engine that watermarks (the plug-in): no request it could not mark."""
    for name in UNMARKED_FIELDS:
        if raw.get(name):
            message = f"`{name}` is not available: its answers could not be watermarked"
            raise ApiError(400, message, "parameter_not_allowed", name)


def shape(
    rule: OutputRule, tier: str, raw: dict[str, Any], typed: protocol.Request
) -> dict[str, Any]:
    """The body the backend gets under `rule`; `typed` is lowered alongside it."""
    if isinstance(typed, protocol.EmbeddingRequest):
        return raw
    asked = [name for name in LOGIT_FIELDS if asks(raw.get(name))]
    included = raw.get("include")
    if isinstance(included, list) and INCLUDE_LOGPROBS in included:
        asked.append("include")
    if asked and rule.logprobs == "refuse":
        raise _not_allowed(asked[0], f"`{asked[0]}` is not available", tier)
    if rule.max_n is not None and typed.n > rule.max_n:
        raise _not_allowed("n", f"`n` above {rule.max_n} is not available", tier)
    shaped = raw
    if asked and rule.logprobs == "strip":
        shaped = {name: value for name, value in raw.items() if name not in LOGIT_FIELDS}
        if "include" in asked:
            shaped["include"] = [item for item in included if item != INCLUDE_LOGPROBS]
    cap = rule.max_tokens
    if cap is not None:
        shaped = dict(shaped) if shaped is raw else shaped
        responses = isinstance(typed, protocol.ResponsesRequest)
        names = ("max_output_tokens",) if responses else ("max_completion_tokens", "max_tokens")
        for name in names:
            value = getattr(typed, name, None)
            if value is not None and value > cap:
                shaped[name] = cap
                setattr(typed, name, cap)
        if typed.requested_tokens is None:  # unset: the engine's own default could be huge
            shaped[names[-1]] = cap
            setattr(typed, names[-1], cap)
    return shaped


def _not_allowed(param: str, what: str, tier: str) -> ApiError:
    return ApiError(
        400, f"{what} to this account (usage tier {tier!r})", "parameter_not_allowed", param
    )
