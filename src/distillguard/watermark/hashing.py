"""The keyed hash behind every watermark decision, in one place.

For a context (the previous k token ids) c and a candidate token v we need a
32-bit value u(c, v) that looks uniform and independent to anyone without the
key. Hashing every (c, v) pair with a full mixer would cost ~10 array passes
over batch x vocabulary at every decoding step, so the work is split:

* ``T[v]``  a keyed random 32-bit word per vocabulary entry, computed once;
* ``S_c``   an odd 32-bit multiplier and ``A_c`` a 32-bit offset per context,
            from a keyed splitmix64 chain over the k context ids (tiny: one
            per batch row at generation time);
* ``u(c, v) = T[v] * S_c + A_c  (mod 2**32)``.

Because multiplication by an odd number is a bijection mod 2**32, u(c, v) is
exactly uniform whenever T[v] is, and a fresh context draws a fresh (S, A), so
the vocabulary-wide step is one multiply, one add and one compare. The
calibration benchmark checks over thousands of keys that the resulting
p-values are uniform.

`numpy` is the reference implementation; the torch processor does the same
integer arithmetic on int32 tensors (two's complement wraps identically), and
a property test holds the two to bit-for-bit equality.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distillguard.watermark.keys import WatermarkKey

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_LOW32 = np.uint64(0xFFFFFFFF)
# A fixed, public seed: de-duplication must find the same tuples whatever key
# is later used to score them (so one pass serves many cohort keys).
_FINGERPRINT_SEED = np.uint64(0x5D1F7A1E0D15711)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorised splitmix64 finaliser (Steele et al. 2014) on uint64 arrays."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64, copy=True)
        z += _GOLDEN
        z ^= z >> np.uint64(30)
        z *= _MIX1
        z ^= z >> np.uint64(27)
        z *= _MIX2
        z ^= z >> np.uint64(31)
    return z


def chain(seed: np.uint64, contexts: np.ndarray) -> np.ndarray:
    """Fold each row of ``contexts`` (n x k token ids) into one uint64 per row."""
    n, k = contexts.shape
    h = np.full(n, seed, dtype=np.uint64)
    for j in range(k):
        h = splitmix64(h ^ contexts[:, j].astype(np.uint64))
    return splitmix64(h) if k == 0 else h


def window_fingerprints(contexts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Key-independent 64-bit identity of each (context, token) window."""
    h = chain(_FINGERPRINT_SEED, contexts)
    return splitmix64(h ^ (tokens.astype(np.uint64) << np.uint64(20)))


@dataclass(frozen=True)
class KeyedHash:
    """u(c, v) for one key, one purpose (scheme) and one vocabulary size."""

    token_table: np.ndarray  # uint32[vocab_size]
    context_seed: np.uint64

    @classmethod
    def for_key(cls, key: WatermarkKey, purpose: str, vocab_size: int) -> KeyedHash:
        token_seed = np.uint64(int.from_bytes(key.subkey_bytes(f"{purpose}/token"), "little"))
        context_seed = np.uint64(int.from_bytes(key.subkey_bytes(f"{purpose}/context"), "little"))
        with np.errstate(over="ignore"):
            counters = np.arange(vocab_size, dtype=np.uint64) + token_seed
        table = (splitmix64(counters) >> np.uint64(32)).astype(np.uint32)
        return cls(token_table=table, context_seed=context_seed)

    @property
    def vocab_size(self) -> int:
        return int(self.token_table.shape[0])

    def context_params(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(S, A) as uint32 arrays, one per context row; S is always odd."""
        h = chain(self.context_seed, contexts)
        multiplier = ((h & _LOW32) | np.uint64(1)).astype(np.uint32)
        offset = (h >> np.uint64(32)).astype(np.uint32)
        return multiplier, offset

    def values(self, contexts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """u(c_i, v_i) for aligned rows: the detector's view (uint32)."""
        multiplier, offset = self.context_params(contexts)
        with np.errstate(over="ignore"):
            return self.token_table[tokens] * multiplier + offset

    def vocabulary_values(self, contexts: np.ndarray) -> np.ndarray:
        """u(c_i, v) for every v: the generator's view, shape (rows, vocab)."""
        multiplier, offset = self.context_params(contexts)
        with np.errstate(over="ignore"):
            return self.token_table[None, :] * multiplier[:, None] + offset[:, None]


def to_unit_interval(values: np.ndarray) -> np.ndarray:
    """Map uint32 hash values to floats strictly inside (0, 1).

    24 bits are kept so that float32 (the torch path) represents every value
    exactly and the two implementations agree bit for bit.
    """
    return ((values >> np.uint32(8)).astype(np.float64) + 0.5) / float(1 << 24)
