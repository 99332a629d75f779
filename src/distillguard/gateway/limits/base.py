"""What a limiter is asked and what it answers, independent of where its state lives.

The gateway describes a request as charges (units taken from GCRA buckets) and slots
(concurrency leases) and asks one question, `admit`, answered all-or-nothing: a refused
request consumes nothing, so retry storms cannot drain an account's quota. `settle` later
replaces token reservations by real usage and releases the lease.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol


class LimiterUnavailable(Exception):
    """The limiter's shared state cannot be reached (Redis down, timed out, refusing).

    The one error a limiter raises for its own faults, so the gateway can answer 503
    (or fall back to in-process limits) without knowing which client library failed.
    """


@dataclass(frozen=True)
class Rate:
    """`limit` units per `period` seconds; a full bucket admits `limit` units at once."""

    limit: int
    period: float

    def __post_init__(self) -> None:
        if not isinstance(self.limit, int) or self.limit < 1:
            raise ValueError(f"rate limit must be a positive integer, got {self.limit!r}")
        if not self.period_us >= 1:
            raise ValueError(f"rate period must be at least 1µs, got {self.period!r}")

    @cached_property  # read several times per decision
    def period_us(self) -> int:
        """The period in whole microseconds, the resolution of every backend's clock."""
        return round(self.period * 1_000_000)


@dataclass(frozen=True)
class Charge:
    """Take `cost` units from bucket `key` (in `settle`, a negative cost refunds)."""

    key: str
    rate: Rate
    cost: int


@dataclass(frozen=True)
class Slot:
    """A concurrency limit: at most `limit` unexpired leases held on `key`."""

    key: str
    limit: int

    def __post_init__(self) -> None:
        if not isinstance(self.limit, int) or self.limit < 1:
            raise ValueError(f"slot limit must be a positive integer, got {self.limit!r}")


@dataclass(frozen=True)
class BucketState:
    """A bucket after the decision, as the x-ratelimit-* headers report it."""

    key: str
    limit: int
    remaining: int  # whole units that could still be admitted now
    reset_after: float  # seconds until the bucket is full again


@dataclass(frozen=True)
class Decision:
    """The answer to `admit`.

    `retry_after` is 0 when allowed and `math.inf` when a cost exceeds its bucket's limit
    (it can never fit). When only a slot refused it is 0 as well: a slot frees when another
    request ends, which no clock predicts, so the caller picks its own hint.
    """

    allowed: bool
    retry_after: float
    refused_by: str | None  # key of the first bucket (in order), else slot, that refused
    buckets: tuple[BucketState, ...]  # one per charge, in the order given
    lease: str | None  # the lease id, when allowed and slots were given


class Limiter(Protocol):
    """One interface, two backends (`MemoryLimiter`, `RedisLimiter`) with identical answers.

    `now` (seconds) overrides the backend's clock; it exists for tests only.
    """

    async def admit(
        self,
        charges: Sequence[Charge],
        slots: Sequence[Slot] = (),
        *,
        lease_ttl: float = 600.0,
        now: float | None = None,
    ) -> Decision:
        """Consume every charge and take one lease in every slot, or nothing at all."""
        ...

    async def settle(
        self,
        adjustments: Sequence[Charge],
        slots: Sequence[Slot] = (),
        lease: str | None = None,
        *,
        now: float | None = None,
    ) -> None:
        """Apply cost adjustments (refunds may not go below empty) and release `lease`."""
        ...

    async def in_flight(self, key: str, *, now: float | None = None) -> int:
        """Unexpired leases on slot `key`."""
        ...

    async def close(self) -> None: ...


def check_admit(charges: Sequence[Charge], slots: Sequence[Slot], lease_ttl: float) -> None:
    """Reject requests whose meaning would be ambiguous, identically for every backend."""
    if any(c.cost < 0 for c in charges):
        raise ValueError("admit costs must be >= 0; refunds go through settle")
    if len({c.key for c in charges}) != len(charges):
        raise ValueError("each bucket may be charged once per admit")
    if len({s.key for s in slots}) != len(slots):
        raise ValueError("each slot may appear once per admit")
    if not lease_ttl > 0:
        raise ValueError(f"lease_ttl must be positive, got {lease_ttl!r}")


def to_us(seconds: float) -> int:
    """Seconds to the integer microseconds both backends compute in."""
    return round(seconds * 1_000_000)
