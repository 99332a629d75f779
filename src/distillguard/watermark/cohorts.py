"""Account cohorts: which watermark sub-key marks an account's answers.

``cohort = HMAC(key, account_id) mod N``: stable for an account, unpredictable
without the key, and N sub-keys ``key.derive("cohort-<n>")`` let a later
suspect test say which cohort's outputs a student learned from.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

from distillguard.watermark.core import Watermark
from distillguard.watermark.keys import WatermarkKey

# The per-request argument (vLLM's `vllm_xargs`, `SamplingParams.extra_args`) by which the
# gateway tells an engine carrying distillguard's plug-in which cohort to mark.
COHORT_ARG = "distillguard_cohort"


class Cohorts:
    def __init__(self, key: WatermarkKey, count: int = 64) -> None:
        if count < 1:
            raise ValueError("the number of cohorts must be at least 1")
        self.key = key
        self.count = count
        self._assignment_key = key.subkey_bytes("cohort-assignment", 32)
        self.watermark = lru_cache(maxsize=None)(self._watermark)

    def of(self, account_id: str) -> int:
        digest = hmac.new(self._assignment_key, account_id.encode(), hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "big") % self.count

    def _watermark(self, cohort: int) -> Watermark:
        """The watermark of one cohort: the key's parameters, the cohort's sub-key."""
        return Watermark.from_key(self.key.derive(f"cohort-{cohort}"))
