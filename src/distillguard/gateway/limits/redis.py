"""The shared limiter: GCRA state in Redis, so every gateway replica sees the same limits.

Each `admit` and each `settle` is one EVALSHA of `gcra.lua`, which reads, decides and
writes every bucket and slot atomically; the clock is Redis `TIME`, so replicas on hosts
with skewed clocks still agree. Keys are `{prefix}b:{bucket}` (hash) and
`{prefix}s:{slot}` (sorted set of leases), each expiring once it holds nothing.

All keys of one call go to one server: under Redis Cluster give an account's keys a
common hash tag (e.g. ``{acct42}:tokens``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from importlib.resources import files

from redis.asyncio import Redis
from redis.exceptions import RedisError

from distillguard.gateway.limits import gcra
from distillguard.gateway.limits.base import (
    Charge,
    Decision,
    LimiterUnavailable,
    Slot,
    check_admit,
    to_us,
)

SCRIPT = files(__package__).joinpath("gcra.lua").read_text(encoding="utf-8")
# A stalled Redis must fail a request within seconds, not hold it (and its slot) for minutes.
TIMEOUTS = {"socket_connect_timeout": 1.0, "socket_timeout": 2.0}


class RedisLimiter:
    """`Limiter` on Redis (>= 5, for TIME in scripts), via a URL or a `redis.asyncio` client.

    `ttl_slack` (seconds) keeps keys that long past the moment they hold nothing; tests
    that drive a fake clock raise it so real time cannot expire fake-time state.
    """

    def __init__(self, redis: str | Redis, *, prefix: str = "dg:", ttl_slack: float = 1.0):
        self._owned = isinstance(redis, str)
        self._client: Redis = Redis.from_url(redis, **TIMEOUTS) if isinstance(redis, str) else redis
        self._prefix = prefix
        self._slack_ms = max(round(ttl_slack * 1000), 0)
        self._script = self._client.register_script(SCRIPT)  # EVALSHA, reloads on NOSCRIPT

    async def admit(
        self,
        charges: Sequence[Charge],
        slots: Sequence[Slot] = (),
        *,
        lease_ttl: float = 600.0,
        now: float | None = None,
    ) -> Decision:
        check_admit(charges, slots, lease_ttl)
        if not charges and not slots:
            return gcra.decide((), (), (), 0, None)
        lease = uuid.uuid4().hex if slots else ""
        reply = await self._call("admit", charges, slots, lease, to_us(lease_ttl), now)
        refused, levels = int(reply[0]), [float(x) for x in reply[1:]]
        return gcra.decide(charges, slots, levels, refused, lease or None)

    async def settle(
        self,
        adjustments: Sequence[Charge],
        slots: Sequence[Slot] = (),
        lease: str | None = None,
        *,
        now: float | None = None,
    ) -> None:
        adjustments = [c for c in adjustments if c.cost]
        if lease is None:
            slots = ()
        if adjustments or slots:
            await self._call("settle", adjustments, slots, lease or "", 0, now)

    async def in_flight(self, key: str, *, now: float | None = None) -> int:
        if now is None:
            seconds, micros = await self._client.time()
            now_us = seconds * 1_000_000 + micros
        else:
            now_us = to_us(now)
        return int(await self._client.zcount(self._prefix + "s:" + key, f"({now_us}", "+inf"))

    async def close(self) -> None:
        if self._owned:
            await self._client.aclose()

    async def _call(
        self,
        mode: str,
        charges: Sequence[Charge],
        slots: Sequence[Slot],
        lease: str,
        lease_ttl_us: int,
        now: float | None,
    ) -> list:
        keys = [self._prefix + "b:" + c.key for c in charges]
        keys += [self._prefix + "s:" + s.key for s in slots]
        args: list[str | int] = [mode, "" if now is None else to_us(now), len(charges)]
        args += [len(slots), lease, lease_ttl_us, self._slack_ms]
        for c in charges:
            args += [c.rate.limit, c.rate.period_us, c.cost]
        args += [s.limit for s in slots]
        try:
            return await self._script(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise LimiterUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
