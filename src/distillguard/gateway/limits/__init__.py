"""Rate limits: GCRA buckets with token reservation and refund, plus concurrency slots.

One interface (`Limiter`), two backends that decide identically: `MemoryLimiter` for a
single process and tests, `RedisLimiter` for replicas sharing limits.
"""

from distillguard.gateway.limits.base import (
    BucketState,
    Charge,
    Decision,
    Limiter,
    LimiterUnavailable,
    Rate,
    Slot,
)
from distillguard.gateway.limits.memory import MemoryLimiter
from distillguard.gateway.limits.redis import RedisLimiter

__all__ = [
    "BucketState",
    "Charge",
    "Decision",
    "Limiter",
    "LimiterUnavailable",
    "MemoryLimiter",
    "Rate",
    "RedisLimiter",
    "Slot",
]
