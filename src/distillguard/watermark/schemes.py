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

    def z(self, scores: np.ndarray, scored: np.ndarray) -> np.ndarray: ...

    def log_sf(self, scores: np.ndarray, scored: np.ndarray) -> np.ndarray:
        """Natural log of P(score sum >= observed) under the null; `scored` > 0."""
        ...

    def test(self, score: float, scored: int) -> NullTest: ...


def null_tests(scheme: Scheme, scores: np.ndarray, scored: np.ndarray) -> list[NullTest]:
    """Vectorised tests: one scipy call for a whole batch, not one per text."""
    scores = np.asarray(scores, dtype=np.float64)
    scored = np.asarray(scored, dtype=np.int64)
    z = np.zeros(scores.shape)
    log_p = np.zeros(scores.shape)  # nothing scored: p = 1
    some = scored > 0
    if some.any():
        z[some] = scheme.z(scores[some], scored[some])
        log_p[some] = np.minimum(scheme.log_sf(scores[some], scored[some]), 0.0)
    return [
        NullTest(z=float(zi), p_value=math.exp(lp), log10_p_value=float(lp) / LN10)
        for zi, lp in zip(z, log_p, strict=True)
    ]


def _refine(log_p: np.ndarray, exact_log_tail) -> np.ndarray:
    """Replace entries scipy underflowed to -inf by an exact log-space sum."""
    for i in np.flatnonzero(~np.isfinite(log_p)):
        log_p[i] = exact_log_tail(i)
    return log_p


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

    def z(self, scores: np.ndarray, scored: np.ndarray) -> np.ndarray:
        return (scores - self.gamma * scored) / np.sqrt(scored * self.gamma * (1 - self.gamma))

    def log_sf(self, scores: np.ndarray, scored: np.ndarray) -> np.ndarray:
        green = np.rint(scores).astype(np.int64)
        # P(Binomial(n, gamma) >= g) = I_gamma(g, n - g + 1), the regularised incomplete beta.
        with np.errstate(divide="ignore"):
            tail = special.betainc(np.maximum(green, 1), scored - green + 1, self.gamma)
            log_p = np.where(green <= 0, 0.0, np.log(tail))

        def exact(i: int) -> float:  # sum the binomial tail's terms in log space
            tail = np.arange(green[i], scored[i] + 1)
            return float(special.logsumexp(stats.binom.logpmf(tail, scored[i], self.gamma)))

        return _refine(np.atleast_1d(log_p), exact)

    def test(self, score: float, scored: int) -> NullTest:
        return null_tests(self, np.array([score]), np.array([scored]))[0]


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

    def z(self, scores: np.ndarray, scored: np.ndarray) -> np.ndarray:
        return (scores - scored) / np.sqrt(scored)

    def log_sf(self, scores: np.ndarray, scored: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):  # Q(n, x) = P(Gamma(n, 1) > x)
            log_p = np.log(special.gammaincc(scored, scores))

        def exact(i: int) -> float:
            # Gamma(n, 1) with integer n is Erlang: sf(x) = exp(-x) * sum_{k<n} x**k / k!
            k = np.arange(scored[i])
            x = scores[i]
            return -x + float(special.logsumexp(k * math.log(x) - special.gammaln(k + 1)))

        return _refine(np.atleast_1d(log_p), exact)

    def test(self, score: float, scored: int) -> NullTest:
        return null_tests(self, np.array([score]), np.array([scored]))[0]
