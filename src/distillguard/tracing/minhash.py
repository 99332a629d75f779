"""Prompt fingerprints, a whole batch at a time in numpy: MinHash signatures, LSH band keys,
and hashes of a prompt's opening and closing bytes (template skeletons).

Near-duplicate prompts are how templated traffic shows itself: the same
instructions around different inputs, the same question resent with small
edits. MinHash estimates the Jaccard similarity of two prompts' sets of byte
8-grams (language-agnostic: Chinese has no spaces to split words on), and
LSH banding finds the similar pairs without comparing every pair.

Why not datasketch: it hashes each shingle in Python and updates its
permutations per prompt (~0.1 ms a prompt here); tracing has to ingest 50,000
events a second. Here a batch of prompts is one byte array, normalised in place
(digits masked, whitespace unified); every 8-byte window *is* a shingle, read as
one unsigned 64-bit integer through a strided view and mixed (splitmix64); the
signature is a one-permutation MinHash (each shingle lands in one of K bins,
each bin keeps its minimum). A few numpy passes over the bytes, no Python loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NUM_BINS = 32  # signature length; 8 bands of 4 bins
BAND_ROWS = 4
SHINGLE_BYTES = 8
MAX_BYTES = 512  # a template shows in its opening; long pasted inputs add nothing
EMPTY = np.uint32(0xFFFFFFFF)  # a bin no shingle fell into

_BIN_SHIFT = np.uint64(64 - 5)  # NUM_BINS = 2**5
_BAND_WEIGHTS = np.array([0x9E3779B97F4A7C15 >> s for s in range(0, 4 * BAND_ROWS, 4)], np.uint64)
# "item 17" and "item 342" look alike; tabs and newlines are spaces.
_NORMALISE = bytes.maketrans(b"0123456789\t\n\r", b"0000000000   ")
_CLOSING_SEED = np.uint64(0x6A09E667F3BCC908)


@dataclass
class Texts:
    """A batch of normalised texts in one buffer: text i is data[starts[i]:starts[i]+lengths[i]].

    Each text is padded with zeros to at least one shingle, so that every text,
    however short, has a window of its own.
    """

    data: np.ndarray  # uint8
    starts: np.ndarray  # int64
    lengths: np.ndarray  # int64, before padding

    @classmethod
    def of(cls, raw: Sequence[bytes]) -> Texts:
        """A batch of lower-cased UTF-8 texts, each already cut to the part compared."""
        lengths = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
        padded = np.maximum(lengths, SHINGLE_BYTES)
        starts = np.zeros(len(raw), dtype=np.int64)
        np.cumsum(padded[:-1], out=starts[1:])
        # One C pass over the joined batch: short texts padded, digits and spaces unified.
        joined = b"".join(r.ljust(SHINGLE_BYTES, b"\0") for r in raw)
        data = np.frombuffer((joined + bytes(SHINGLE_BYTES)).translate(_NORMALISE), np.uint8)
        return cls(data, starts, lengths)

    def windows(self) -> np.ndarray:
        """The 8-byte window at every byte offset, as uint64 (a view: no copy)."""
        usable = len(self.data) - SHINGLE_BYTES + 1
        return np.ndarray((usable,), dtype="<u8", buffer=self.data, strides=(1,))

    def edge_hash(self, width: int, closing: bool = False) -> np.ndarray:
        """Hash of each text's first (or last) `width` bytes; 0 where the text is shorter."""
        windows = self.windows()
        ends = self.starts + self.lengths
        begin = ends - width if closing else self.starts
        # Openings and closings hash apart: one text's opening is no other's closing.
        acc = np.full(len(self.starts), _CLOSING_SEED if closing else 0, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for offset in range(0, width, SHINGLE_BYTES):
                acc = _mix(acc ^ windows[np.clip(begin + offset, 0, len(windows) - 1)])
        acc[self.lengths < width] = 0
        return acc.view(np.int64)


def openings(texts: Sequence[str]) -> list[bytes]:
    """What a signature reads of each text: its first MAX_BYTES bytes, lower-cased."""
    return [t[:MAX_BYTES].lower().encode()[:MAX_BYTES] for t in texts]


def signatures(texts: Sequence[str], seed: int = 0) -> np.ndarray:
    """(len(texts), NUM_BINS) uint32 MinHash signatures of the texts' openings."""
    return signatures_of(Texts.of(openings(texts)), seed)


def signatures_of(batch: Texts, seed: int = 0) -> np.ndarray:
    """Signatures of a prepared batch; a text with no byte gets an all-EMPTY row.

    A non-zero 64-bit `seed` is XOR-ed into every shingle before mixing, so that only
    holders of the seed can compute or compare signatures (the exchange's keyed MinHash,
    `exchange.privacy.keyed_signature`). Seed 0 leaves the shingles as they are.
    """
    n = len(batch.lengths)
    padded = np.maximum(batch.lengths, SHINGLE_BYTES)
    # Every window of the buffer is hashed, read straight through the strided view (no
    # gather). The few that run past their text's end (and an empty text's one) land in
    # a spare row n, dropped at the end.
    valid = np.where(batch.lengths > 0, np.maximum(batch.lengths - SHINGLE_BYTES + 1, 1), 0)
    spill = padded - valid
    spilled = np.repeat(batch.starts + valid - (np.cumsum(spill) - spill), spill)
    spilled += np.arange(len(spilled))
    total = int(padded.sum())
    slots = np.repeat(np.arange(0, n * NUM_BINS, NUM_BINS, dtype=np.int64), padded)
    slots[spilled] = n * NUM_BINS
    windows = batch.windows()[:total]
    hashes = _mix(windows ^ np.uint64(seed) if seed else windows)
    slots += (hashes >> _BIN_SHIFT).astype(np.int64)
    signature = np.full((n + 1) * NUM_BINS, EMPTY, dtype=np.uint32)
    np.minimum.at(signature, slots, hashes.astype(np.uint32))
    return signature.reshape(n + 1, NUM_BINS)[:n]


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves every output bit. (In place on one
    new array: these run over every byte of every prompt.)"""
    with np.errstate(over="ignore"):
        h = x >> np.uint64(30)
        h ^= x
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
        return h


def band_keys(signature: np.ndarray) -> np.ndarray:
    """(n, bands) uint64 keys: two signatures sharing a key agree on a whole band.

    A band with an empty bin gets key 0, which never counts as a match: two
    short unrelated prompts would otherwise collide on their empty bins.
    """
    n = len(signature)
    bands = signature.reshape(n, NUM_BINS // BAND_ROWS, BAND_ROWS).astype(np.uint64)
    with np.errstate(over="ignore"):
        salted = (bands * _BAND_WEIGHTS).sum(axis=2) + np.arange(bands.shape[1], dtype=np.uint64)
        keys = _mix(salted)
    keys[(bands == np.uint64(EMPTY)).any(axis=2)] = 0
    return keys


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard similarity of two signatures (bins empty in both ignored)."""
    both = (a != EMPTY) | (b != EMPTY)
    return float((a[both] == b[both]).mean()) if both.any() else 0.0


class LshIndex:
    """The band keys seen so far: `add` answers "have I a near-duplicate of this prompt?"."""

    def __init__(self) -> None:
        self._bands: set[int] = set()

    def add(self, keys: list[int], remember: bool = True) -> bool:
        """True if an earlier prompt shared a band with this one; index it if `remember`
        (an actor whose memory is full is still compared, no longer indexed)."""
        new = set(keys)
        new.discard(0)  # bands with an empty bin match nothing
        seen = not self._bands.isdisjoint(new)
        if remember:
            self._bands |= new
        return seen

    def __len__(self) -> int:
        return len(self._bands)
