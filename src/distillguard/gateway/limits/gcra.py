"""GCRA arithmetic: the reference that `gcra.lua` transcribes operation for operation.

GCRA keeps one number per bucket, the theoretical arrival time (TAT); a request of cost c
moves it to max(TAT, now) + c·T (T = period/limit) and is admitted iff that lands no more
than one period ahead of now. We store the same thing relative to the last update, scaled
by the limit so that every quantity is an integer number of (1/limit) µs:

    level = (max(TAT, now) - now) in µs × limit        capacity = period_us × limit
    a unit of cost adds period_us                       a µs of time drains `limit`

so the admission test `level + cost·period_us <= capacity` is exact (no float epsilon)
while capacity stays below 2**53 (150M units/min, 104k units/day), and is off by
at most a 2**-40 fraction of the period beyond that (`SLACK`: a day's bucket may admit a
request ~0.1µs early rather than refuse an exact fit for a rounding error).

Every operation is IEEE double arithmetic in the same order as the Lua script (Lua 5.1
numbers are doubles), so both backends make bit-identical decisions; a property test holds
them to it. A bucket's stored state is (level, at_us, limit); the limit is kept so that a
changed rate (e.g. a throttled account) rescales the level and preserves the TAT.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from distillguard.gateway.limits.base import BucketState, Charge, Decision, Slot

SLACK = 1 / 1099511627776  # 2**-40, the same literal as in gcra.lua

State = tuple[float, float, int]  # (level, at_us, limit) as written at `at_us`


def level_at(state: State | None, limit: int, now_us: float) -> float:
    """The bucket's level at `now_us` in units of `limit` (rescaled if the limit changed)."""
    if state is None:
        return 0.0
    level, at_us, old_limit = state
    if old_limit != limit:
        level = level * limit / old_limit
    return max(level - (now_us - at_us) * float(limit), 0.0)


def capacity(charge: Charge) -> float:
    return float(charge.rate.limit) * float(charge.rate.period_us)


def fits(charge: Charge, level: float) -> bool:
    """Whether `charge` is admissible on a bucket at `level` (cost 0 always is)."""
    if charge.cost == 0:
        return True
    if charge.cost > charge.rate.limit:
        return False
    cap = capacity(charge)
    return level + float(charge.cost) * float(charge.rate.period_us) <= cap + cap * SLACK


def charged(charge: Charge, level: float) -> float:
    """The level after consuming (or, for a negative cost, refunding) `charge`."""
    return max(level + float(charge.cost) * float(charge.rate.period_us), 0.0)


def bucket_state(charge: Charge, level: float) -> BucketState:
    period_us = float(charge.rate.period_us)
    remaining = max(int((capacity(charge) - level) // period_us), 0)
    reset_after = level / charge.rate.limit / 1e6
    return BucketState(charge.key, charge.rate.limit, remaining, reset_after)


def retry_after(charge: Charge, level: float) -> float:
    """Seconds until `charge` would fit, at `level` now."""
    if charge.cost > charge.rate.limit:
        return math.inf
    excess = level + float(charge.cost) * float(charge.rate.period_us) - capacity(charge)
    return max(excess / charge.rate.limit / 1e6, 0.0)


def decide(
    charges: Sequence[Charge],
    slots: Sequence[Slot],
    levels: Sequence[float],
    refused: int,
    lease: str | None,
) -> Decision:
    """Build the answer from each bucket's level before the request and the backend's verdict.

    `refused` is the 1-based position in charges + slots of the first refusal, 0 if none:
    the backend that committed (or not) is the authority on whether the request passed.
    """
    allowed = refused == 0
    after = [charged(c, lv) if allowed else lv for c, lv in zip(charges, levels, strict=True)]
    wait = max(
        (retry_after(c, lv) for c, lv in zip(charges, levels, strict=True) if not fits(c, lv)),
        default=0.0,
    )
    keys = [c.key for c in charges] + [s.key for s in slots]
    return Decision(
        allowed=allowed,
        retry_after=0.0 if allowed else wait,
        refused_by=None if allowed else keys[refused - 1],
        buckets=tuple(bucket_state(c, lv) for c, lv in zip(charges, after, strict=True)),
        lease=lease if allowed and slots else None,
    )
