"""From scored windows to a verdict a partner or a court can check.

The same selected windows (`watermark.windows`: de-duplicated across the whole run,
prompt windows excluded) are scored under every key that matters:

* **cohorts**: the gateway marks each account cohort's answers with its own sub-key
  (`watermark.cohorts`), so a student that learned from one cohort's answers carries
  that sub-key's signal. Every cohort is tested; Holm's step-down procedure controls
  the family-wise error, and the cohorts whose adjusted p-value is below alpha are
  named. The verdict's p-value is the smallest adjusted one. Without cohorts the key
  itself is the one tested (answers from `distillguard generate --key`).
* **per cohort**: when the corpus says which cohort each answer went to (the event
  export), cohort c's sub-key is tested on the windows of cohort c's answers only. A
  student learned a cohort's key from that cohort's answers; pooling every cohort's
  windows would dilute its signal N-fold. Each test stays exact, and Holm still covers
  the family.
* **control**: the same windows under as many fresh keys (derived from the key under
  labels no answer was ever marked with, so a rerun gives the same verdict), corrected
  the same way. It must come out non-significant; if it does not, the windows are not
  independent of the key (a broken selection), and the verdict says so rather than
  accuse anyone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from distillguard.watermark.core import DetectionResult, Watermark
from distillguard.watermark.keys import WatermarkKey
from distillguard.watermark.vllm_gumbel import VllmWatermark
from distillguard.watermark.windows import Windows

DEFAULT_ALPHA = 0.01


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, monotone, capped at 1), in the input order.

    Hand-written because it is six lines and scipy offers only Benjamini-Hochberg; it
    controls the family-wise error under any dependence between the tests.
    """
    p = np.asarray(p_values, dtype=float)
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return adjusted.tolist()


@dataclass(frozen=True)
class KeyTest:
    """One key's test over the windows, with its Holm-adjusted p-value."""

    label: int | str
    result: DetectionResult
    p_adjusted: float


@dataclass(frozen=True)
class Verdict:
    mode: str  # "reading" (open weights) or "api"
    per_cohort: bool  # each cohort's key tested on its own answers' windows (else pooled)
    alpha: float
    tests: list[KeyTest]  # the cohorts (or the key itself)
    control: list[KeyTest]  # fresh random keys, corrected the same way

    @property
    def best(self) -> KeyTest:
        return min(self.tests, key=lambda t: t.p_adjusted)

    @property
    def control_significant(self) -> bool:
        return min(t.p_adjusted for t in self.control) < self.alpha

    @property
    def learned(self) -> bool:
        """The suspect learned from our outputs: significant, and the control is not."""
        return self.best.p_adjusted < self.alpha and not self.control_significant

    def named(self) -> list[KeyTest]:
        """The cohorts whose outputs the suspect learned (empty without a verdict)."""
        if not self.learned:
            return []
        return sorted((t for t in self.tests if t.p_adjusted < self.alpha), key=_by_p)

    def document(self) -> dict:
        best = self.best.result
        if self.control_significant:
            said = "inconclusive: the control is significant"
        else:
            said = "trained on our outputs" if self.learned else "no evidence"
        # Every window tested: per cohort, each cohort's own; pooled, the one set all score.
        scored = sum(t.result.scored for t in self.tests) if self.per_cohort else best.scored
        return {
            "mode": self.mode,
            "scored": scored,
            "best": {"key": self.best.label, "scored": best.scored},
            "green_fraction": best.green_fraction,
            "windows": "per cohort" if self.per_cohort else "pooled",
            "p_value": self.best.p_adjusted,
            # Holm's first step is Bonferroni: the exact figure where p underflows to 0.
            "log10_p_value": min(0.0, best.log10_p_value + math.log10(len(self.tests))),
            "verdict": said,
            "alpha": self.alpha,
            "control": {
                "keys": len(self.control),
                "p_value": min(t.p_adjusted for t in self.control),
                "significant": self.control_significant,
            },
            "cohorts": [
                {
                    "cohort": t.label,
                    "scored": t.result.scored,
                    "p_value": t.result.p_value,
                    "p_adjusted": t.p_adjusted,
                }
                for t in sorted(self.tests, key=_by_p)
                if isinstance(t.label, int)
            ],
            "named_cohorts": [t.label for t in self.named() if isinstance(t.label, int)],
        }


def judge(
    key: WatermarkKey,
    windows: Windows | Mapping[int, Windows],
    *,
    mode: str,
    cohorts: int | None = None,
    alpha: float = DEFAULT_ALPHA,
    control_keys: int | None = None,
) -> Verdict:
    """Score `windows` under the cohort sub-keys (or the key) and as many fresh keys.

    `windows` is one set every key scores, or one set per cohort (needs `cohorts`):
    cohort c's key scores set c, and control key i scores set i, so the control mirrors
    the test exactly (a cohort without answers is scored on nothing: p = 1)."""
    if cohorts is not None and cohorts < 1:
        raise ValueError("the number of cohorts must be at least 1")
    per_cohort = isinstance(windows, Mapping)
    if per_cohort and cohorts is None:
        raise ValueError("windows per cohort need the number of cohorts")
    if cohorts is None:
        labelled: list[tuple[int | str, Watermark]] = [("key", Watermark.from_key(key))]
    else:
        labelled = [(c, Watermark.from_key(key.derive(f"cohort-{c}"))) for c in range(cohorts)]
    # Keys no answer was ever marked with (cohorts use "cohort-<n>"), derived rather than
    # drawn so that anyone holding the key can rerun the test and get the same verdict.
    fresh = [
        (f"control-{i}", Watermark.from_key(key.derive(f"control-{i}")))
        for i in range(control_keys or len(labelled))
    ]
    count = max(len(labelled), len(fresh))
    if isinstance(windows, Mapping):  # (= per_cohort, spelt so for the type checker)
        none = Windows.empty(labelled[0][1].config.context_width)
        sets = [windows.get(i % len(labelled), none) for i in range(count)]
    else:
        sets = [windows] * count
    return Verdict(mode, per_cohort, alpha, _tested(labelled, sets), _tested(fresh, sets))


def judge_vllm(
    mark: VllmWatermark,
    answers: Sequence[Sequence[int]],
    *,
    mode: str,
    alpha: float = DEFAULT_ALPHA,
    control_keys: int = 16,
) -> Verdict:
    """The same verdict under vLLM's own watermark (one key per engine, no cohorts): the
    answers' windows as vLLM's detector takes them, pooled, and as many derived keys no
    engine marked with as the control."""
    found = [mark.detect_corpus(answers)]
    control = [mark.control(i).detect_corpus(answers) for i in range(control_keys)]
    return Verdict(
        mode,
        False,
        alpha,
        _adjusted(["key"], found),
        _adjusted([f"control-{i}" for i in range(control_keys)], control),
    )


def _tested(labelled: list[tuple[int | str, Watermark]], sets: Sequence[Windows]) -> list[KeyTest]:
    # Keys are independent: scored on threads (the hashing is numpy, which releases the GIL).
    with ThreadPoolExecutor(min(len(labelled), os.cpu_count() or 1)) as pool:
        marks = [wm for _, wm in labelled]
        results = list(pool.map(Watermark.detect_windows, marks, sets[: len(marks)]))
    return _adjusted([label for label, _ in labelled], results)


def _adjusted(labels: Sequence[int | str], results: Sequence[DetectionResult]) -> list[KeyTest]:
    """Each result with its Holm-adjusted p-value within the family."""
    adjusted = holm([r.p_value for r in results])
    return [KeyTest(label, r, p) for label, r, p in zip(labels, results, adjusted, strict=True)]


def _by_p(test: KeyTest) -> float:
    return test.p_adjusted
