"""What one request costs against which limits, and the OpenAI rate-limit headers.

A request charges one unit to every requests-per-minute bucket and reserves
``prompt tokens + max_tokens × n`` in every token bucket (per minute and per
day) of its key, account and organisation, and takes a concurrency slot in
each. After the answer, `settlement` turns the reservation into real usage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from distillguard.config import LimitDefaults
from distillguard.gateway.limits import BucketState, Charge, Decision, Rate, Slot
from distillguard.policy import Limits
from distillguard.store import KeyRecord

MINUTE = 60.0
DAY = 86_400.0
# A slot frees when some other request ends, which no clock predicts: suggest a short wait.
SLOT_RETRY_HINT = 0.5


@dataclass(frozen=True)
class Quota:
    charges: tuple[Charge, ...]
    slots: tuple[Slot, ...]
    reserved_tokens: int
    kinds: dict[str, str]  # bucket key -> "requests" | "tokens" | "tokens_per_day"

    def settlement(self, used_tokens: int) -> tuple[Charge, ...]:
        """Adjustments that replace the reservation by `used_tokens` in every token bucket."""
        delta = used_tokens - self.reserved_tokens
        if delta == 0:
            return ()
        return tuple(
            Charge(c.key, c.rate, delta) for c in self.charges if self.kinds[c.key] != "requests"
        )


def plan(
    record: KeyRecord, defaults: LimitDefaults, multiplier: float, reserved_tokens: int
) -> Quota:
    scopes: list[tuple[str, str, Limits]] = [
        ("key", record.key_id, record.limits.over(defaults.key)),
        ("account", record.account_id, record.account_limits.over(defaults.account)),
    ]
    if record.org_id is not None:
        scopes.append(("org", record.org_id, record.org_limits.over(defaults.org)))
    charges: list[Charge] = []
    slots: list[Slot] = []
    kinds: dict[str, str] = {}
    for scope, ident, limits in scopes:
        limits = limits.scaled(multiplier)
        for kind, limit, period, cost in (
            ("requests", limits.rpm, MINUTE, 1),
            ("tokens", limits.tpm, MINUTE, reserved_tokens),
            ("tokens_per_day", limits.tpd, DAY, reserved_tokens),
        ):
            if limit is not None:
                key = f"{scope}:{ident}:{kind}"
                charges.append(Charge(key, Rate(limit, period), cost))
                kinds[key] = kind
        if limits.concurrency is not None:
            slots.append(Slot(f"{scope}:{ident}:concurrency", limits.concurrency))
    return Quota(tuple(charges), tuple(slots), reserved_tokens, kinds)


# OpenAI's own 429: code `rate_limit_exceeded`, type the kind of limit ("requests" or
# "tokens"); the message names the scope and the limit.
RATE_LIMIT_CODE = "rate_limit_exceeded"


def refusal_message(quota: Quota, decision: Decision) -> tuple[str, str]:
    """(message, error type) saying which limit refused, as OpenAI words it."""
    key = decision.refused_by or ""
    scope = key.split(":", 1)[0]
    kind = quota.kinds.get(key, "concurrency")
    limit = next((c.rate.limit for c in quota.charges if c.key == key), None)
    if limit is None:
        limit = next((s.limit for s in quota.slots if s.key == key), 0)
    wait = decision.retry_after or SLOT_RETRY_HINT
    error_type = "requests" if kind in ("requests", "concurrency") else "tokens"
    if math.isinf(wait):
        return (
            f"request too large: it reserves {quota.reserved_tokens} tokens but the {scope} "
            f"limit is {limit} {kind.replace('_', ' ')}; lower max_tokens or the prompt",
            error_type,
        )
    what = {
        "requests": "requests per minute",
        "tokens": "tokens per minute",
        "tokens_per_day": "tokens per day",
        "concurrency": "concurrent requests",
    }[kind]
    return (
        f"rate limit reached for {scope} ({what}): limit {limit}; retry in {format_duration(wait)}",
        error_type,
    )


def headers(quota: Quota, decision: Decision) -> dict[str, str]:
    """x-ratelimit-* (tightest bucket of each kind) and, on refusal, retry-after(-ms)."""
    out: dict[str, str] = {}
    for kind, suffix in (("requests", "requests"), ("tokens", "tokens")):
        states = [b for b in decision.buckets if quota.kinds.get(b.key) == kind]
        if not states:
            continue
        tightest: BucketState = min(states, key=lambda b: (b.remaining, -b.reset_after))
        out[f"x-ratelimit-limit-{suffix}"] = str(tightest.limit)
        out[f"x-ratelimit-remaining-{suffix}"] = str(max(0, tightest.remaining))
        out[f"x-ratelimit-reset-{suffix}"] = format_duration(tightest.reset_after)
    if not decision.allowed:
        if math.isinf(decision.retry_after):
            out["x-should-retry"] = "false"  # the openai SDK honours this: no pointless retries
        else:
            wait = decision.retry_after or SLOT_RETRY_HINT
            out["retry-after"] = str(math.ceil(wait))
            out["retry-after-ms"] = str(math.ceil(wait * 1000))
    return out


def format_duration(seconds: float) -> str:
    """OpenAI's duration format: ``20ms``, ``1s``, ``6m0s``, ``1h2m3.5s``."""
    if seconds <= 0 or math.isinf(seconds):
        return "0s"
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text
