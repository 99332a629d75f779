"""The in-process limiter: GCRA state in dicts, for a single replica and for tests.

Atomic without locks because no decision awaits anything: asyncio cannot interleave two
requests inside `admit`. Limits are per process, so running several replicas with it
multiplies every limit; use `RedisLimiter` for that.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence

from distillguard.gateway.limits import gcra
from distillguard.gateway.limits.base import Charge, Decision, Slot, check_admit, to_us

SWEEP_EVERY = 1024  # decisions between sweeps of drained buckets and empty slots


class _Held:
    """The leases of one slot. Expired ones are pruned only once the soonest can have
    expired, so counting is O(1) per admission rather than O(leases held)."""

    __slots__ = ("expiry", "soonest")

    def __init__(self) -> None:
        self.expiry: dict[str, float] = {}  # lease id -> expiry µs
        self.soonest = math.inf

    def add(self, lease: str, expiry: float) -> None:
        self.expiry[lease] = expiry
        self.soonest = min(self.soonest, expiry)

    def count(self, now_us: float) -> int:
        """Live leases at `now_us` (a lease expiring at or before it is gone)."""
        if now_us >= self.soonest:
            self.expiry = {lease: e for lease, e in self.expiry.items() if e > now_us}
            self.soonest = min(self.expiry.values(), default=math.inf)
        return len(self.expiry)


class MemoryLimiter:
    """`Limiter` on dicts; `clock` returns seconds (monotonic by default)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, gcra.State] = {}
        self._leases: dict[str, _Held] = {}  # slot key -> its leases
        self._ops = 0

    def _now_us(self, now: float | None) -> float:
        return float(to_us(self._clock() if now is None else now))

    async def admit(
        self,
        charges: Sequence[Charge],
        slots: Sequence[Slot] = (),
        *,
        lease_ttl: float = 600.0,
        now: float | None = None,
    ) -> Decision:
        check_admit(charges, slots, lease_ttl)
        now_us = self._now_us(now)
        levels = [gcra.level_at(self._buckets.get(c.key), c.rate.limit, now_us) for c in charges]
        pairs = zip(charges, levels, strict=True)
        refused = next((i for i, (c, lv) in enumerate(pairs, 1) if not gcra.fits(c, lv)), 0)
        if not refused:
            for j, slot in enumerate(slots, len(charges) + 1):
                if self._live(slot.key, now_us) >= slot.limit:
                    refused = j
                    break
        lease = None
        if not refused:
            for charge, level in zip(charges, levels, strict=True):
                if charge.cost:
                    self._store(charge, gcra.charged(charge, level), now_us)
            if slots:
                lease = uuid.uuid4().hex
                expiry = now_us + float(to_us(lease_ttl))
                for slot in slots:
                    self._leases.setdefault(slot.key, _Held()).add(lease, expiry)
        self._maybe_sweep(now_us)
        return gcra.decide(charges, slots, levels, refused, lease)

    async def settle(
        self,
        adjustments: Sequence[Charge],
        slots: Sequence[Slot] = (),
        lease: str | None = None,
        *,
        now: float | None = None,
    ) -> None:
        now_us = self._now_us(now)
        for charge in adjustments:
            if charge.cost:
                level = gcra.level_at(self._buckets.get(charge.key), charge.rate.limit, now_us)
                self._store(charge, gcra.charged(charge, level), now_us)
        if lease is not None:
            for slot in slots:
                held = self._leases.get(slot.key)
                if held is not None:
                    held.expiry.pop(lease, None)
                    if not held.expiry:
                        del self._leases[slot.key]

    async def in_flight(self, key: str, *, now: float | None = None) -> int:
        return self._live(key, self._now_us(now))

    async def close(self) -> None:
        self._buckets.clear()
        self._leases.clear()

    def _store(self, charge: Charge, level: float, now_us: float) -> None:
        # An empty bucket and a missing one are the same state; Redis deletes it too.
        if level <= 0:
            self._buckets.pop(charge.key, None)
        else:
            self._buckets[charge.key] = (level, now_us, charge.rate.limit)

    def _live(self, key: str, now_us: float) -> int:
        held = self._leases.get(key)
        return held.count(now_us) if held is not None else 0

    def _maybe_sweep(self, now_us: float) -> None:
        """Forget drained buckets and empty slots now and then, so idle accounts cost nothing."""
        self._ops += 1
        if self._ops % SWEEP_EVERY:
            return
        for key, state in list(self._buckets.items()):
            if gcra.level_at(state, state[2], now_us) <= 0:
                del self._buckets[key]
        for key in list(self._leases):
            if not self._live(key, now_us):
                del self._leases[key]
