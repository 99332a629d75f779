"""Watermark schemes: how hash values bias generation and how they are scored.

Each scheme answers three questions over the same keyed hash values
(`hashing.KeyedHash`): how to change a row of logits (generation), what each
scored token contributes (detection), and the exact null distribution of the
sum (p-value). De-duplication and prompt exclusion happen upstream, once, in
`detection`, so the schemes stay small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
from scipy import special, stats

from distillguard.watermark.hashing import to_unit_interval

LN10 = math.log(10.0)


@dataclass(frozen=True)
class NullTest:
    """Outcome of comparing a score sum with its exact null distribution."""

    z: float
    p_value: float
    log10_p_value: float


class Scheme(Protocol):
    name: ClassVar[str]

    def bias(self, logits: np.ndarray, values: np.ndarray) -> np.ndarray: ...

    def token_scores(self, values: np.ndarray) -> np.ndarray: ...

    def test(self, score: float, scored: int) -> NullTest: ...


@dataclass(frozen=True)
class KGW:
    """Green-list watermark (Kirchenbauer et al., ICML 2023).

    A fraction ``gamma`` of the vocabulary is green for each context; green
    logits get ``+delta``. Under the null each scored token is green with
    probability gamma, so the green count is Binomial(scored, gamma).
    """

    gamma: float = 0.25
    delta: float = 2.0
    name: ClassVar[str] = "kgw"

    @property
    def threshold(self) -> int:
        """u < threshold is green; gamma is realised to 1 part in 2**32."""
        return round(self.gamma * 2**32)

    def green(self, values: np.ndarray) -> np.ndarray:
        return values < np.uint32(self.threshold)

    def bias(self, logits: np.ndarray, values: np.ndarray) -> np.ndarray:
        return logits + self.delta * self.green(values).astype(logits.dtype)

    def token_scores(self, values: np.ndarray) -> np.ndarray:
        return self.green(values).astype(np.float64)

    def test(self, score: float, scored: int) -> NullTest:
        if scored == 0:
            return NullTest(z=0.0, p_value=1.0, log10_p_value=0.0)
        green = round(score)
        log_p = float(stats.binom.logsf(green - 1, scored, self.gamma))
        if not math.isfinite(log_p):  # beyond float range: sum the tail in log space
            tail = np.arange(green, scored + 1)
            log_p = float(special.logsumexp(stats.binom.logpmf(tail, scored, self.gamma)))
        z = (green - self.gamma * scored) / math.sqrt(scored * self.gamma * (1 - self.gamma))
        return _null_test(z, log_p)


@dataclass(frozen=True)
class Gumbel:
    """Gumbel-max sampling watermark (Aaronson 2022; Fernandez et al. 2023).

    The next token is argmax(logits + G) with G keyed Gumbel noise: an exact
    sample from softmax(logits) for anyone without the key (scale the logits
    first for another temperature). The returned logits keep only that token.
    Each scored token contributes -log(1 - u), which is Exp(1) under the null,
    so the sum is Gamma(scored, 1).
    """

    name: ClassVar[str] = "gumbel"

    def bias(self, logits: np.ndarray, values: np.ndarray) -> np.ndarray:
        gumbel = -np.log(-np.log(to_unit_interval(values)))
        choice = np.argmax(logits + gumbel, axis=-1)
        out = np.full_like(logits, -np.inf)
        np.put_along_axis(out, choice[:, None], 0.0, axis=-1)
        return out

    def token_scores(self, values: np.ndarray) -> np.ndarray:
        return -np.log1p(-to_unit_interval(values))

    def test(self, score: float, scored: int) -> NullTest:
        if scored == 0:
            return NullTest(z=0.0, p_value=1.0, log10_p_value=0.0)
        log_p = float(stats.gamma.logsf(score, a=scored))
        if not math.isfinite(log_p):
            # Gamma(n, 1) with integer n is Erlang: sf(x) = exp(-x) * sum_{k<n} x**k / k!
            k = np.arange(scored)
            log_p = -score + float(special.logsumexp(k * math.log(score) - special.gammaln(k + 1)))
        return _null_test((score - scored) / math.sqrt(scored), log_p)


def _null_test(z: float, log_p: float) -> NullTest:
    log_p = min(log_p, 0.0)
    return NullTest(z=float(z), p_value=math.exp(log_p), log10_p_value=log_p / LN10)


SCHEMES = ("kgw", "gumbel")
