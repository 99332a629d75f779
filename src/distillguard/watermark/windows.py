"""Which (context, token) windows a detector may score: handled once, for every scheme.

Two rules keep a clean model from looking watermarked:

* **de-duplication**: a repeated (context, token) window carries the same hash
  value every time, so counting it twice breaks the independence the exact
  p-value assumes (repetitive text would inflate the score);
* **prompt exclusion**: a window copied from the prompt was chosen by the user,
  not sampled from our biased distribution.

Windows are identified independently of any key (exact bit-packing of the ids,
or a fixed-seed fingerprint for contexts too wide to pack), so the same
selection serves every key that scores it (e.g. all cohort keys of one suspect
test).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np

from distillguard.errors import VocabularyMismatchError
from distillguard.watermark.hashing import splitmix64, window_fingerprints


@dataclass(frozen=True)
class Windows:
    """Aligned arrays of scoreable windows, grouped by source sequence."""

    contexts: np.ndarray  # int64 (n, k)
    tokens: np.ndarray  # int64 (n,)
    segments: np.ndarray  # int64 (n,): index of the sequence each window came from
    n_segments: int
    total: np.ndarray  # int64 (n_segments,): windows before selection

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @classmethod
    def empty(cls, width: int) -> Windows:
        none = np.zeros(0, dtype=np.int64)
        return cls(np.zeros((0, width), dtype=np.int64), none, none, 0, none)

    def by_segment(self) -> dict[int, Windows]:
        """One `Windows` per segment that has any (each a corpus of its own: segment 0)."""
        order = None
        if self.segments.size > 1 and (np.diff(self.segments) < 0).any():
            order = np.argsort(self.segments, kind="stable")
        segments = self.segments if order is None else self.segments[order]
        present, starts = np.unique(segments, return_index=True)
        ends = np.append(starts[1:], segments.size)
        split = {}
        for segment, start, end in zip(present.tolist(), starts, ends, strict=True):
            rows = slice(start, end) if order is None else order[start:end]
            split[segment] = Windows(
                self.contexts[rows],
                self.tokens[rows],
                np.zeros(end - start, dtype=np.int64),
                1,
                self.total[segment : segment + 1],
            )
        return split


@dataclass(frozen=True)
class Sequences:
    """Many token sequences as one flat int64 array, validated once."""

    flat: np.ndarray
    lengths: np.ndarray  # int64, one per sequence

    @classmethod
    def pack(
        cls, sequences: Sequence[Sequence[int] | np.ndarray | None], vocab_size: int
    ) -> Sequences:
        items = [s if s is not None else () for s in sequences]
        flat: np.ndarray
        try:
            if any(isinstance(s, np.ndarray) for s in items):
                arrays = [np.asarray(s) for s in items]
                if any(a.ndim != 1 for a in arrays):
                    raise ValueError("not flat")
                lengths = np.array([a.size for a in arrays], dtype=np.int64)
                filled = [a for a in arrays if a.size]
                flat = np.concatenate(filled) if filled else np.zeros(0, dtype=np.int64)
            else:  # lists, as tokenizers give them: one conversion (2x faster than per list)
                lengths = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
                flat = np.array(list(chain.from_iterable(items)))
                if flat.ndim != 1:
                    raise ValueError("not flat")
        except (TypeError, ValueError):
            raise VocabularyMismatchError("token ids must be a flat sequence of integers") from None
        if flat.size == 0:
            return cls(np.zeros(0, dtype=np.int64), lengths)
        if not np.issubdtype(flat.dtype, np.integer):
            raise VocabularyMismatchError("token ids must be a flat sequence of integers")
        low, high = int(flat.min()), int(flat.max())
        if low < 0 or high >= vocab_size:
            bad = high if high >= vocab_size else low
            raise VocabularyMismatchError(
                f"token id {bad} is outside the watermark vocabulary (size {vocab_size}); "
                "was the text tokenised with a different tokenizer?"
            )
        return cls(flat.astype(np.int64, copy=False), lengths)

    def windows(
        self, width: int, scoreable: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(contexts (n, width), tokens, segment of each window, windows per sequence).

        ``scoreable`` (bool, aligned with ``flat``) drops the windows whose
        token is not scoreable; the per-sequence counts stay those before it.
        Vectorised over all sequences at once: per-sequence Python work would
        cost more than the hashing for short texts.
        """
        positions, segments, counts = self.positions(width)
        if scoreable is not None:
            keep = scoreable[positions]
            positions, segments = positions[keep], segments[keep]
        return self.contexts_at(positions, width), self.flat[positions], segments, counts

    def positions(self, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where in ``flat`` each window's token is (in sequence order), the sequence of
        each, and the windows per sequence: sequences of the same lengths share them."""
        counts = np.maximum(self.lengths - width, 0)
        total = int(counts.sum())
        starts = np.cumsum(self.lengths) - self.lengths
        segments = np.repeat(np.arange(self.lengths.size, dtype=np.int64), counts)
        first_window = np.cumsum(counts) - counts
        offsets = np.arange(total, dtype=np.int64) - np.repeat(first_window, counts)
        return np.repeat(starts + width, counts) + offsets, segments, counts

    def contexts_at(self, positions: np.ndarray, width: int) -> np.ndarray:
        """The `width` ids before each position, oldest first: (n, width)."""
        contexts = np.empty((positions.shape[0], width), dtype=np.int64)
        for j in range(width):
            np.take(self.flat, positions - (width - j), out=contexts[:, j])
        return contexts


def pack_mask(masks: Sequence[Sequence[bool] | np.ndarray], sequences: Sequences) -> np.ndarray:
    """Per-sequence boolean masks as one flat array aligned with ``sequences.flat``."""
    arrays = [np.asarray(m, dtype=bool).reshape(-1) for m in masks]
    lengths = [a.size for a in arrays]
    if lengths != sequences.lengths.tolist():
        raise ValueError("scoreable masks must have one entry per token of each sequence")
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=bool)


def select(
    sequences: Sequences,
    width: int,
    prompts: Sequences | None = None,
    *,
    vocab_size: int,
    pooled: bool = False,
    scoreable: np.ndarray | None = None,
) -> Windows:
    """Windows of each sequence, de-duplicated and minus prompt windows.

    ``pooled=True`` de-duplicates across all sequences (one corpus-level test);
    otherwise each sequence is de-duplicated on its own. ``scoreable`` (bool,
    aligned with ``sequences.flat``) restricts scoring to chosen token
    positions; it must not depend on the key, or the null test is no longer
    exact. The order of the returned windows is unspecified.
    """
    contexts, tokens, segments, counts = sequences.windows(width, scoreable)
    excluded = prompts.windows(width)[:3] if prompts is not None else None
    return distinct(
        contexts, tokens, segments, counts, excluded, vocab_size=vocab_size, pooled=pooled
    )


def distinct(
    contexts: np.ndarray,
    tokens: np.ndarray,
    segments: np.ndarray,
    totals: np.ndarray,
    excluded: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    *,
    vocab_size: int,
    pooled: bool = False,
) -> Windows:
    """Windows given as arrays, de-duplicated (per segment, or across all if `pooled`)
    and minus the `excluded` ones (contexts, tokens, segments). `select` builds them from
    token sequences; a suspect test in reading mode pairs our corpus's contexts with the
    suspect model's predicted tokens."""
    n = int(totals.size)
    if tokens.shape[0] == 0:
        return Windows(contexts, tokens, segments, n, totals)
    if pooled:
        segments = np.zeros_like(segments)
    if excluded is not None:
        p_contexts, p_tokens, p_segments = excluded
        if pooled:
            p_segments = np.zeros_like(p_segments)
    codec = _Codec.for_shape(contexts.shape[1], vocab_size, 1 if pooled else n)
    if codec is None:
        keep = _first_occurrences(_identity(contexts, tokens, segments))
        if excluded is not None:
            keep &= ~np.isin(
                _identity(contexts, tokens, segments), _identity(p_contexts, p_tokens, p_segments)
            )
        contexts, tokens, segments = contexts[keep], tokens[keep], segments[keep]
    else:
        codes = np.sort(codec.encode(contexts, tokens, segments))
        codes = codes[_distinct_sorted(codes)]
        if excluded is not None:
            prompt_codes = codec.encode(p_contexts, p_tokens, p_segments)
            codes = codes[~_member_of(codes, prompt_codes)]
        contexts, tokens, segments = codec.decode(codes)
    return Windows(contexts, tokens, segments, n, totals)


def first_contexts(contexts: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Mask of the windows whose context occurs for the first time in its segment, in
    order (reading-mode suspect tests score only those).

    Windows in sequence order (as `Sequences.windows` gives them) take the fast path:
    one sort of (context, index) packed exactly into a uint64; within a run of equal
    contexts the indices ascend, so a segment's first is where the segment changes.
    """
    n, width = contexts.shape
    if n == 0:
        return np.zeros(0, dtype=bool)
    id_bits = max(1, int(contexts.max()).bit_length())
    index_bits = max(1, (n - 1).bit_length())
    in_order = n < 2 or not (np.diff(segments) < 0).any()
    if not in_order or width * id_bits + index_bits > 64:
        tokens = np.zeros(n, dtype=np.int64)
        return _first_occurrences(_identity(contexts, tokens, segments))
    code = np.zeros(n, dtype=np.uint64)
    for j in range(width):
        code <<= np.uint64(id_bits)
        code |= contexts[:, j].astype(np.uint64)
    code <<= np.uint64(index_bits)
    code |= np.arange(n, dtype=np.uint64)
    code.sort()
    index = (code & np.uint64((1 << index_bits) - 1)).astype(np.int64)
    context = code >> np.uint64(index_bits)
    segment = segments[index]
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(context[1:], context[:-1], out=first[1:])
    first[1:] |= segment[1:] != segment[:-1]
    keep = np.zeros(n, dtype=bool)
    keep[index[first]] = True
    return keep


class _Codec:
    """Exact packing of (segment, context ids, token id) into one uint64.

    Sorting packed codes de-duplicates without an argsort, and decoding gives
    the windows back, so the fast path needs no hashing at all.
    """

    def __init__(self, width: int, id_bits: int, segment_bits: int) -> None:
        self.width = width
        self.id_bits = id_bits
        self.segment_shift = (width + 1) * id_bits
        self.segment_bits = segment_bits

    @classmethod
    def for_shape(cls, width: int, vocab_size: int, n_segments: int) -> _Codec | None:
        id_bits = max(1, int(vocab_size - 1).bit_length())
        segment_bits = int(max(n_segments - 1, 0)).bit_length()
        if (width + 1) * id_bits + segment_bits > 64:
            return None
        return cls(width, id_bits, segment_bits)

    def encode(self, contexts: np.ndarray, tokens: np.ndarray, segments: np.ndarray) -> np.ndarray:
        bits = np.uint64(self.id_bits)
        code = np.zeros(tokens.shape[0], dtype=np.uint64)
        for j in range(self.width):
            code = (code << bits) | contexts[:, j].astype(np.uint64)
        code = (code << bits) | tokens.astype(np.uint64)
        if self.segment_bits:
            code |= segments.astype(np.uint64) << np.uint64(self.segment_shift)
        # Sorting 32-bit codes (k = 1, one sequence) is ~1.6x faster than 64-bit.
        return code.astype(np.uint32) if self.segment_shift + self.segment_bits <= 32 else code

    def decode(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # In int64 when the codes leave the sign bit free: no unsigned copies to convert.
        kind = np.int64 if self.segment_shift + self.segment_bits < 64 else np.uint64
        codes = codes.astype(kind, copy=False)
        bits, mask = kind(self.id_bits), kind((1 << self.id_bits) - 1)
        tokens = np.bitwise_and(codes, mask).astype(np.int64, copy=False)
        contexts = np.empty((codes.shape[0], self.width), dtype=np.int64)
        rest = codes >> bits
        for j in range(self.width - 1, -1, -1):
            np.bitwise_and(rest, mask, out=contexts[:, j], casting="unsafe")
            rest >>= bits
        segments = (codes >> kind(self.segment_shift)).astype(np.int64, copy=False)
        return contexts, tokens, segments


def _distinct_sorted(ordered: np.ndarray) -> np.ndarray:
    first = np.empty(ordered.shape[0], dtype=bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return first


def _member_of(sorted_codes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Which of `sorted_codes` (ascending, distinct) are among `others`. `others` are
    sorted first: binary searches in ascending order walk memory forwards (4x faster
    than unsorted ones here; np.isin would sort both sides)."""
    found = np.zeros(sorted_codes.shape[0], dtype=bool)
    if others.shape[0] == 0 or sorted_codes.shape[0] == 0:
        return found
    others = np.sort(others)
    at = np.searchsorted(sorted_codes, others)
    np.minimum(at, sorted_codes.shape[0] - 1, out=at)
    found[at[sorted_codes[at] == others]] = True
    return found


def _identity(contexts: np.ndarray, tokens: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Hashed window identity, for context widths too wide to pack exactly."""
    with np.errstate(over="ignore"):
        salt = segments.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return splitmix64(window_fingerprints(contexts, tokens) ^ salt)


def _first_occurrences(identity: np.ndarray) -> np.ndarray:
    order = np.argsort(identity, kind="stable")
    first = _distinct_sorted(identity[order])
    keep = np.zeros(identity.shape[0], dtype=bool)
    keep[order[first]] = True
    return keep
