"""Policy: the limits that apply to a request and what each risk tier does to them.

Every account has a risk tier, set by an admin now and by tracing later:
``normal`` and ``watch`` keep their limits (``watch`` only marks events),
``throttle`` multiplies every limit by a configured factor, ``block`` refuses
with 403. Limits are given per key, account and organisation; unset values
fall back to configured defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from distillguard.errors import DistillguardError

Tier = Literal["normal", "watch", "throttle", "block"]
TIERS: tuple[str, ...] = get_args(Tier)


# The store's column widths: tokens per day is a BIGINT, the others INTEGERs.
MAX_LIMIT = {"rpm": 2**31 - 1, "tpm": 2**31 - 1, "tpd": 2**63 - 1, "concurrency": 2**31 - 1}


class InvalidLimitError(DistillguardError, ValueError):
    """A limit that is not a positive integer (a ValueError, so settings validation reports it)."""


@dataclass(frozen=True)
class Limits:
    """Requests/min, tokens/min, tokens/day, concurrent requests; None = configured default."""

    rpm: int | None = None
    tpm: int | None = None
    tpd: int | None = None
    concurrency: int | None = None

    def __post_init__(self) -> None:
        for name, most in MAX_LIMIT.items():
            value = getattr(self, name)
            if value is not None and not 1 <= value <= most:
                raise InvalidLimitError(f"{name} must be an integer from 1 to {most}, got {value}")

    def over(self, defaults: Limits) -> Limits:
        """These limits, with the unset ones taken from `defaults`."""
        own, fallback = self.columns(), defaults.columns()
        return Limits(**{n: fallback[n] if v is None else v for n, v in own.items()})

    def columns(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in MAX_LIMIT}

    def scaled(self, factor: float) -> Limits:
        """Every limit times `factor`, never below 1 (a throttled account still gets through)."""
        if factor == 1.0:
            return self
        return Limits(
            **{
                name: None if value is None else max(1, math.floor(value * factor))
                for name, value in self.columns().items()
            }
        )
