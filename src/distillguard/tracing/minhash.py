"""MinHash signatures of prompts, a whole batch at a time in numpy, and an LSH index over them.

Near-duplicate prompts are how templated traffic shows itself: the same
instructions around different inputs, the same question resent with small
edits. MinHash estimates the Jaccard similarity of two prompts' sets of byte
8-grams (language-agnostic: Chinese has no spaces to split words on), and
LSH banding finds the similar pairs without comparing every pair.

Why not datasketch: it hashes each shingle in Python and updates its
permutations per prompt (~0.1 ms a prompt here); tracing has to ingest 50,000
events a second. Here a batch of prompts is one byte array: shingle hashes come
from a polynomial prefix hash (one cumulative sum), and the signature is a
one-permutation MinHash (each shingle lands in one of K bins, each bin keeps
its minimum), so the cost is a few numpy passes over the bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NUM_BINS = 32  # signature length; 8 bands of 4 bins
BAND_ROWS = 4
SHINGLE_BYTES = 8
MAX_BYTES = 1024  # a template shows in its first kilobyte; long pasted inputs add nothing
EMPTY = np.uint32(0xFFFFFFFF)  # a bin no shingle fell into

_P = np.uint64(0x100000001B3)  # odd, so it has an inverse modulo 2**64
_P_INV = np.uint64(pow(int(_P), -1, 2**64))
_DIGITS = str.maketrans("0123456789", "0000000000")  # "item 17" and "item 342" look alike
_BAND_WEIGHTS = np.array([0x9E3779B97F4A7C15 >> s for s in range(0, 4 * BAND_ROWS, 4)], np.uint64)


def normalise(text: str) -> bytes:
    """Lower case, digits masked, whitespace collapsed; the first MAX_BYTES bytes."""
    text = text[:MAX_BYTES]  # no character is shorter than a byte: nothing kept is lost
    return " ".join(text.lower().translate(_DIGITS).split()).encode()[:MAX_BYTES]


def _powers(base: np.uint64, n: int) -> np.ndarray:
    powers = np.full(n, base, dtype=np.uint64)
    powers[0] = 1
    with np.errstate(over="ignore"):
        return np.cumprod(powers, dtype=np.uint64)  # wraps modulo 2**64, as intended


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads the polynomial hash over all 64 bits."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def signatures(texts: Sequence[str]) -> np.ndarray:
    """(len(texts), NUM_BINS) uint32 MinHash signatures; empty texts get all-EMPTY rows."""
    return signatures_of([normalise(t) for t in texts])


def signatures_of(docs: Sequence[bytes]) -> np.ndarray:
    """Signatures of already normalised texts (see `normalise`)."""
    signature = np.full((len(docs), NUM_BINS), EMPTY, dtype=np.uint32)
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    if not lengths.any():
        return signature
    data = np.frombuffer(b"".join(docs), dtype=np.uint8).astype(np.uint64)
    n = len(data)
    powers = _powers(_P, n + 1)
    with np.errstate(over="ignore"):
        prefix = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(data * powers[:n], out=prefix[1:])
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        # One shingle per byte position whose 8-gram stays inside its own text; a text
        # shorter than 8 bytes is one shingle, itself.
        widths = np.minimum(lengths, SHINGLE_BYTES)
        counts = np.where(lengths > 0, np.maximum(lengths - SHINGLE_BYTES + 1, 1), 0)
        owner = np.repeat(np.arange(len(docs)), counts)
        first = np.repeat(starts - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
        at = np.arange(len(owner)) + first
        end = at + widths[owner]
        inverse = _powers(_P_INV, n + 1)
        hashes = _mix((prefix[end] - prefix[at]) * inverse[at] + widths[owner].astype(np.uint64))
    bins = (hashes >> np.uint64(64 - 5)).astype(np.int64)  # NUM_BINS = 2**5
    values = (hashes & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    np.minimum.at(signature.reshape(-1), owner * NUM_BINS + bins, values)
    return signature


def band_keys(signature: np.ndarray) -> np.ndarray:
    """(n, bands) uint64 keys: two signatures sharing a key agree on a whole band.

    A band with an empty bin gets key 0, which never counts as a match: two
    short unrelated prompts would otherwise collide on their empty bins.
    """
    n = len(signature)
    bands = signature.reshape(n, -1, BAND_ROWS).astype(np.uint64)
    with np.errstate(over="ignore"):
        keys = _mix(
            (bands * _BAND_WEIGHTS).sum(axis=2) + np.arange(bands.shape[1], dtype=np.uint64)
        )
    keys[(bands == np.uint64(EMPTY)).any(axis=2)] = 0
    return keys


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard similarity of two signatures (bins empty in both ignored)."""
    both = (a != EMPTY) | (b != EMPTY)
    return float((a[both] == b[both]).mean()) if both.any() else 0.0


class LshIndex:
    """Band key -> the prompts that had it: `seen` answers "have I a near-duplicate?"."""

    def __init__(self) -> None:
        self._bands: dict[int, int] = {}  # band key -> how many prompts had it

    def add(self, keys: list[int]) -> bool:
        """Index one prompt's band keys; True if an earlier prompt shared a band."""
        seen = False
        for key in keys:
            if key:
                count = self._bands.get(key, 0)
                seen = seen or count > 0
                self._bands[key] = count + 1
        return seen

    def __len__(self) -> int:
        return len(self._bands)
