"""Flag thresholds from a target false-positive rate on the provider's own population.

A score's absolute value means little across providers: a coding-tool company's benign
population scores higher than a chat app's. So the thresholds are set the way
benign-calibrated detectors set theirs: score a reference population (a past window of the
provider's traffic, or the accounts it vouches for), and put each threshold just above the
score that all but the target share of that population stays under. On another window of
the same population the same share is flagged, give or take the week's variation
(docs/benchmarks.md measures it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from distillguard.errors import DistillguardError

STEP = 1e-4  # thresholds in steps of this size: scores are saved to 4 decimals


class CalibrationError(DistillguardError, ValueError):
    """A reference population too small for the rate asked, or rates out of range."""


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold and what it does on the reference population."""

    tier: str  # the tier setting it is for: "watch" or "throttle"
    fpr: float  # the target: the share of reference accounts that may reach it
    threshold: float
    reached: int  # reference accounts scoring at or above it (at most fpr x reference)
    reference: int

    def setting(self) -> str:
        return f"{self.tier}_at = {self.threshold:.4f}"


def threshold_at(scores: Iterable[float], fpr: float) -> tuple[float, int]:
    """The lowest threshold (a multiple of STEP, at most 1) that at most ⌊fpr × n⌋ of
    `scores` reach, and how many do reach it."""
    if not 0.0 < fpr < 1.0:
        raise CalibrationError(f"a false-positive rate is between 0 and 1, got {fpr}")
    ranked = sorted(scores, reverse=True)
    allowed = math.floor(fpr * len(ranked) + 1e-9)  # 0.01 x 300 is 3, not 2.9999
    if allowed < 1:
        raise CalibrationError(
            f"{len(ranked):,} reference accounts cannot measure a {fpr:.2%} rate: "
            f"it needs at least {math.ceil(1 / fpr - 1e-9):,}"
        )
    if allowed >= len(ranked):
        return 0.0, len(ranked)
    # Just above the score of the first account that must stay under.
    under = ranked[allowed]
    threshold = min(1.0, (math.floor(under / STEP + 1e-9) + 1) * STEP)
    return threshold, sum(s >= threshold for s in ranked)


def calibrate(
    scores: Mapping[str, float],
    *,
    throttle_fpr: float,
    watch_fpr: float,
    reference: Iterable[str] | None = None,
) -> list[OperatingPoint]:
    """The watch and throttle (flag) thresholds for `scores` of the reference accounts
    (`reference`: their ids; None: every account in `scores`)."""
    if watch_fpr < throttle_fpr:
        raise CalibrationError(
            f"the watch rate ({watch_fpr:.2%}) must be at least the throttle rate "
            f"({throttle_fpr:.2%}): watch comes before throttle"
        )
    if reference is None:
        chosen = list(scores.values())
    else:
        ids = set(reference)
        missing = sorted(ids - scores.keys())
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise CalibrationError(
                f"{len(missing):,} reference accounts are not in the scored run: {shown}"
            )
        chosen = [scores[a] for a in ids]
    points = []
    for tier, fpr in (("watch", watch_fpr), ("throttle", throttle_fpr)):
        threshold, reached = threshold_at(chosen, fpr)
        points.append(OperatingPoint(tier, fpr, threshold, reached, len(chosen)))
    return points
