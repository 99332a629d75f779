"""Prompt templates other providers shared: recognise a prompt that fills one, at once.

A provider that finds a templated sweep publishes the template as a *keyed* MinHash
signature (`exchange.privacy.keyed_signature`: `minhash.signatures` of one filled
prompt under a 64-bit seed derived from a consortium key). Holders of the key compute
their own prompts' signatures under the same seed and compare; nobody else can.

`SharedTemplates` holds the signatures per seed. `matches` signs a batch once per seed
and answers, per prompt, whether its estimated Jaccard similarity to any shared
signature reaches MATCH_AT. Candidates come from an index of every signature's bin
minima (LSH with bands of one bin: a pair is a candidate when it agrees on one bin): a
table of flags rules out most prompts with one read per bin, a sorted array of the
minima finds, for the rest, the signatures they agree with, and those pairs are counted
in full. The answer is exactly what comparing every pair would give. Bands of four
bins (`minhash.band_keys`, what the near-duplicate index uses) would find only about
half of the matches: two fillings of one template share only the template's part of
their openings, an estimated similarity of 0.2 to 0.6, where four bins in a row often
disagree.

MATCH_AT was chosen on the shared prompt corpus (`benchmarks/tracing_bench.py
--match-experiment`, docs/tracing.md): at 0.4 a new filling of a template matches about
half the time when the template's text or ~100 of its fillings are listed (1 time in 7
when a single filling is), and an ordinary prompt about 1 time in 900.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from distillguard.tracing import minhash

MATCH_AT = 0.4  # estimated Jaccard similarity to a shared signature that counts as a match
# A template is a fixed part and a filling: an opening shorter than two template skeletons
# (features.SKELETON_BYTES) is just a prompt, and too short to tell one template from another.
MIN_BYTES = 80
_CHUNK = 1 << 22  # (prompt, signature) counts and agreements held at once while confirming
_TOLERANCE = 1e-9  # 12 of 30 bins is 0.4, though 0.4 * 30 is not 12 in floating point
_BIN_KEYS = np.arange(minhash.NUM_BINS, dtype=np.uint64) << np.uint64(32)
_BIN_SALTS = np.random.default_rng(0x5A17).integers(0, 2**32, minhash.NUM_BINS, dtype=np.uint32)
# A table of at most 64 MiB: 1 slot in 16 up to ~130,000 signatures; past that it fills
# up, more prompts reach the exact check, and the answer is the same.
_MAX_TABLE_BITS = 26


class _Seed:
    """The signatures shared under one seed, indexed by (bin, minimum).

    Two indexes of the same keys: a sorted array (exact, binary search) and a table of
    flags (one read per key, a few false hits) that rules out most prompts at once.
    """

    def __init__(self, signatures: np.ndarray) -> None:
        self.signatures = signatures
        self.filled = signatures != minhash.EMPTY
        keys = (signatures.astype(np.uint64) | _BIN_KEYS).ravel()
        rows = np.repeat(np.arange(len(signatures), dtype=np.int64), minhash.NUM_BINS)
        keep = self.filled.ravel()
        order = np.argsort(keys[keep], kind="stable")
        self.keys = keys[keep][order]
        self.rows = rows[keep][order]
        # At most 1 slot in 16 taken: a prompt that agrees with no signature agrees with
        # the table on ~2 of 32 bins at most, far below MATCH_AT.
        size = 1 << max(16, min(_MAX_TABLE_BITS, int(16 * len(self.keys)).bit_length()))
        self.mask = np.uint32(size - 1)
        self.table = np.zeros(size, dtype=bool)
        self.table[self._slots(signatures)[self.filled]] = True

    def _slots(self, signatures: np.ndarray) -> np.ndarray:
        return (signatures ^ _BIN_SALTS) & self.mask

    def matches(self, signatures: np.ndarray, eligible: np.ndarray) -> np.ndarray:
        found = np.zeros(len(signatures), dtype=bool)
        filled = signatures != minhash.EMPTY
        # Agreeing with one signature on a share s of the bins filled in either means
        # agreeing with the set on at least s of this prompt's filled bins: first by the
        # table (a superset), then exactly.
        need = _needed(filled.sum(axis=1))
        agree = self.table[self._slots(signatures)] & filled
        maybe = np.flatnonzero(eligible & (agree.sum(axis=1) >= need))
        if not len(maybe):
            return found
        signatures, filled, need = signatures[maybe], filled[maybe], need[maybe]
        keys = signatures.astype(np.uint64) | _BIN_KEYS
        low = np.searchsorted(self.keys, keys, "left")
        high = np.searchsorted(self.keys, keys, "right")
        agree = (high > low) & filled  # this bin's minimum is in some shared signature
        kept = np.flatnonzero(agree.sum(axis=1) >= need)
        maybe = maybe[kept]
        # Confirmed a chunk at a time: each prompt costs a row of counts (one per signature)
        # and one entry per signature it agrees with in a bin.
        cost = np.where(agree[kept], (high - low)[kept], 0).sum(axis=1) + len(self.signatures)
        chunk_of = (np.cumsum(cost) - 1) // _CHUNK
        for chunk in np.split(np.arange(len(kept)), np.flatnonzero(np.diff(chunk_of)) + 1):
            rows = kept[chunk]
            found[maybe[chunk]] = self._confirm(
                signatures[rows], low[rows], high[rows], agree[rows]
            )
        return found

    def _confirm(
        self, signatures: np.ndarray, low: np.ndarray, high: np.ndarray, agree: np.ndarray
    ) -> np.ndarray:
        """The exact estimated similarity of each prompt to the signatures it agrees with."""
        n, m = len(signatures), len(self.signatures)
        prompt, column = np.nonzero(agree)
        begin, size = low[prompt, column], high[prompt, column] - low[prompt, column]
        ends = np.cumsum(size)
        # Every (prompt, signature) agreement, one per bin: the rows of each bin's range,
        # counted per pair.
        pairs = self.rows[np.arange(int(size.sum())) + np.repeat(begin - (ends - size), size)]
        pairs += np.repeat(prompt * m, size)
        equal = np.bincount(pairs, minlength=n * m).reshape(n, m)
        # Bins empty in both are ignored (minhash.similarity): the union of filled bins.
        mine = (signatures != minhash.EMPTY).sum(axis=1)
        near, sig = np.nonzero(equal >= _needed(mine)[:, None])
        union = (self.filled[sig] | (signatures[near] != minhash.EMPTY)).sum(axis=1)
        found = np.zeros(n, dtype=bool)
        found[near[equal[near, sig] >= _needed(union)]] = True
        return found


def _needed(bins: np.ndarray) -> np.ndarray:
    """How many equal bins make a match among `bins` compared."""
    return np.ceil(MATCH_AT * bins - _TOLERANCE).astype(np.int64)


class SharedTemplates:
    """Keyed MinHash signatures of templates other providers shared, by seed.

    `SharedTemplates.from_signatures({seed: rows})` with `rows` a (m, NUM_BINS) uint32
    array (or a list of NUM_BINS rows, as `privacy.decode_signature` gives them). An
    empty set costs nothing: `features.describe` skips it.
    """

    def __init__(self, seeds: Mapping[int, _Seed] | None = None) -> None:
        self._seeds = dict(seeds or {})

    @classmethod
    def from_signatures(
        cls, signatures: Mapping[int, np.ndarray | Sequence[np.ndarray]]
    ) -> SharedTemplates:
        seeds = {}
        for seed, rows in signatures.items():
            if not 0 <= seed < 2**64:
                raise ValueError(f"a keyed MinHash seed is a 64-bit unsigned integer, not {seed}")
            array = np.asarray(rows, dtype=np.uint32).reshape(-1, minhash.NUM_BINS)
            array = array[(array != minhash.EMPTY).any(axis=1)]  # a signature of nothing
            if len(array):
                seeds[int(seed)] = _Seed(np.unique(array, axis=0))
        return cls(seeds)

    def __len__(self) -> int:
        """How many distinct signatures are held, over every seed."""
        return sum(len(s.signatures) for s in self._seeds.values())

    def matches(self, batch: minhash.Texts) -> np.ndarray:
        """Whether each text of the batch (prompt openings, as `describe` prepares them)
        fills a shared template: estimated similarity >= MATCH_AT to one signature."""
        found = np.zeros(len(batch.lengths), dtype=bool)
        eligible = batch.lengths >= MIN_BYTES
        if not eligible.any():
            return found
        for seed, index in self._seeds.items():
            found |= index.matches(minhash.signatures_of(batch, seed), eligible & ~found)
        return found
