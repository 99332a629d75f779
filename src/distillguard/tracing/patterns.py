"""Many case-insensitive patterns matched in one pass over a prompt (RE2's pattern sets).

Prompt classifiers run on every event; RE2 compiles a set of patterns into one
automaton and scans each text once, in linear time, reporting every pattern
that matched, where Python's backtracking `re` tries each alternative at each
position (~40x slower on these lexicons).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import re2


class PatternSet:
    def __init__(self, patterns: Sequence[str]) -> None:
        options = re2.Options()
        options.case_sensitive = False
        options.max_mem = 64 << 20  # the multilingual lexicons need more than the 8 MiB default
        self._set = re2.Set.SearchSet(options)
        for pattern in patterns:
            if self._set.Add(pattern) < 0:
                raise ValueError(f"RE2 rejects the pattern {pattern[:60]!r}")
        self._set.Compile()

    def found(self, text: str | bytes) -> list[int]:
        """Indices of the patterns that occur in `text` (in no particular order)."""
        return self._set.Match(text) or []


class Lexicons:
    """Several lexicons in one pass per text. Each is its patterns and a rule that reads
    which of them matched (and may look again at the text, for a costly check that
    only a few texts need)."""

    def __init__(self, *lexicons: tuple[Sequence[str], Callable[[set[int], Any], Any]]) -> None:
        self._set = PatternSet([p for patterns, _ in lexicons for p in patterns])
        self._parts = []
        offset = 0
        for patterns, decide in lexicons:
            self._parts.append((offset, offset + len(patterns), decide))
            offset += len(patterns)

    def classify(self, text: str | bytes) -> tuple:
        """Each lexicon's verdict on `text`, in the order they were given."""
        found = self._set.found(text)
        return tuple(
            decide({i - lo for i in found if lo <= i < hi}, text) for lo, hi, decide in self._parts
        )
