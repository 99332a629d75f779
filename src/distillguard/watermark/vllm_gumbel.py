"""Detection of vLLM's own watermark (`--watermark-config`, vLLM >= 0.30), without vLLM.

A provider that already turned on vLLM's built-in Gumbel-max watermark holds one
64-bit key per engine; this module reads those marks from token ids, so suspect
tests work without redeploying. It reproduces `vllm.v1.watermarking` exactly:

* the PRF: Philox4x32-10 (Salmon et al., SC 2011) keyed by the 64-bit key, the
  context ids absorbed four at a time under a context domain word, then one more
  Philox block for the candidate token under a token domain word; the 32-bit
  output keeps 24 bits as u = (m + 1) / (2**24 + 1), rounded to float32;
* contexts are the previous `context_width` ids, padded with -1 before the
  first token (every token is scored), and a context seen before in the same
  text is skipped (`deduplicate`, vLLM's detector default);
* each token scores -log(1 - u), the sum is Gamma(n, 1) under the null; the
  dual-key scheme derives key A and key B as vLLM does (SHA-256) and fuses their
  scores with weights 1 - alpha and alpha.

What the key means for forgery: it is 64 bits and Philox is a counter-based
generator built for speed, not a cryptographic PRF. Anyone who learns the key
(it sits in the engine's command line or config) can mark arbitrary text or
strip marks, and nothing published says how hard recovering it from marked
outputs is. Treat a p-value from this scheme as evidence a text came from an
engine holding the key, not as proof against a forger; distillguard's own
cohort keys are 256-bit secrets under HMAC-SHA256 and SplitMix chains.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import special

from distillguard.errors import KeyFileError
from distillguard.watermark.core import DetectionResult
from distillguard.watermark.schemes import LN10

_MASK = np.uint64(0xFFFFFFFF)
_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_CONTEXT_DOMAIN = 0x574D4358
_TOKEN_DOMAIN = 0x574D544B
ALGORITHMS = ("gumbel", "dual_key_gumbel")


def derive_key(key: int, domain: bytes) -> int:
    """vLLM's sub-key derivation (dual-key Gumbel's key A and key B)."""
    return int.from_bytes(hashlib.sha256(domain + key.to_bytes(8, "big")).digest()[:8], "big")


def _mulhilo(multiplier: np.uint64, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    product = values * multiplier  # both < 2**32: exact in 64 bits
    return product >> np.uint64(32), product & _MASK


def _philox(counter: list[np.ndarray], key: list[np.ndarray]) -> list[np.ndarray]:
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for round_index in range(10):
        h0, l0 = _mulhilo(_M0, c0)
        h1, l1 = _mulhilo(_M1, c2)
        c0, c1, c2, c3 = h1 ^ c1 ^ k0, l1, h0 ^ c3 ^ k1, l0
        if round_index != 9:
            k0 = (k0 + _W0) & _MASK
            k1 = (k1 + _W1) & _MASK
    return [c0, c1, c2, c3]


def philox_uniform(key: int, contexts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """u(context_i, token_i) in (0, 1) as float32, for aligned rows (the detector's view)."""
    contexts = np.asarray(contexts, dtype=np.int64).astype(np.uint64) & _MASK
    n, width = contexts.shape
    k0 = np.full(n, key & 0xFFFFFFFF, dtype=np.uint64)
    k1 = np.full(n, key >> 32, dtype=np.uint64)
    state = [
        np.full(n, _CONTEXT_DOMAIN, dtype=np.uint64),
        np.full(n, width, dtype=np.uint64),
        np.zeros(n, dtype=np.uint64),
        np.zeros(n, dtype=np.uint64),
    ]
    for offset in range(0, width, 4):
        block = [
            contexts[:, offset + i]
            if offset + i < width
            else np.full(n, 0xFFFFFFFF - i, dtype=np.uint64)
            for i in range(4)
        ]
        counter = [state[i] ^ block[i] for i in range(4)]
        state = _philox(counter, [k0 ^ np.uint64(offset), k1])
    words = np.asarray(tokens, dtype=np.int64).astype(np.uint64) & _MASK
    out = _philox(
        [words >> np.uint64(2), state[0], state[1], state[2]],
        [k0 ^ state[3], k1 ^ np.uint64(_TOKEN_DOMAIN)],
    )
    chosen = np.choose((words & np.uint64(3)).astype(np.int64), out)
    mantissa = (chosen & _MASK) >> np.uint64(8)
    return ((mantissa.astype(np.float64) + 1.0) / (2**24 + 1)).astype(np.float32)


@dataclass(frozen=True)
class VllmWatermark:
    """vLLM's watermark configuration, as given to `--watermark-config` (the key included)."""

    key: int
    algorithm: str = "gumbel"
    context_width: int = 4
    alpha: float = 0.1
    deduplicate: bool = True

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> VllmWatermark:
        """Validate a `--watermark-config` document; fields vLLM uses only when generating
        (`deduplicate_contexts`, its history, speculative-decoding switches) are ignored."""
        key = config.get("key")
        if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < 2**64:
            raise KeyFileError("vLLM watermark config: `key` must be an integer in [0, 2**64)")
        algorithm = config.get("algorithm", "gumbel")
        if algorithm not in ALGORITHMS:
            raise KeyFileError(f"vLLM watermark config: `algorithm` must be one of {ALGORITHMS}")
        if config.get("prf", "philox") != "philox":
            raise KeyFileError("vLLM watermark config: only the `philox` PRF exists")
        width = config.get("context_width", 4)
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise KeyFileError("vLLM watermark config: `context_width` must be a positive int")
        alpha = config.get("alpha", 0.1)
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
            raise KeyFileError("vLLM watermark config: `alpha` must be in [0, 1]")
        return cls(key, algorithm, width, float(alpha))

    @classmethod
    def load(cls, path: Path) -> VllmWatermark:
        """The JSON document given to vLLM's `--watermark-config`, from a file."""
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise KeyFileError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise KeyFileError(f"{path}: not a readable JSON document ({exc})") from None
        if not isinstance(document, dict):
            raise KeyFileError(f"{path}: a vLLM watermark config is a JSON object")
        return cls.from_config(document)

    def control(self, index: int) -> VllmWatermark:
        """A key no engine marked with, derived (so a rerun gives the same verdict): the
        control a suspect test scores beside the real key."""
        return replace(self, key=derive_key(self.key, f"distillguard-control-{index}".encode()))

    @property
    def scheme(self) -> str:
        return f"vllm-{self.algorithm.replace('_', '-')}"

    def windows(self, token_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(contexts, targets) that vLLM's detector scores, in order."""
        ids = np.asarray(token_ids, dtype=np.int64)
        k = self.context_width
        padded = np.concatenate([np.full(k, -1, dtype=np.int64), ids])
        contexts = np.lib.stride_tricks.sliding_window_view(padded, k)[: len(ids)]
        if not self.deduplicate or len(ids) == 0:
            return contexts, ids
        _, first = np.unique(contexts, axis=0, return_index=True)
        keep = np.sort(first)
        return contexts[keep], ids[keep]

    def detect(self, token_ids: Sequence[int]) -> DetectionResult:
        return self._test(*self.windows(token_ids))

    def detect_corpus(self, sequences: Sequence[Sequence[int]]) -> DetectionResult:
        """One test over many texts: each padded as vLLM pads one, and a context repeated
        anywhere in the corpus scored once (the same keyed noise is not new evidence)."""
        parts = [replace(self, deduplicate=False).windows(ids) for ids in sequences]
        if not parts:
            return self._test(np.empty((0, self.context_width), np.int64), np.empty(0, np.int64))
        contexts = np.concatenate([c for c, _ in parts])
        targets = np.concatenate([t for _, t in parts])
        if self.deduplicate and len(targets):
            _, first = np.unique(contexts, axis=0, return_index=True)
            keep = np.sort(first)
            contexts, targets = contexts[keep], targets[keep]
        return self._test(contexts, targets)

    def _test(self, contexts: np.ndarray, targets: np.ndarray) -> DetectionResult:
        n = len(targets)
        if n == 0:
            return DetectionResult(0, 0.0, 0.0, 1.0, 0.0, 0, self.scheme)
        if self.algorithm == "gumbel":
            score = float(_scores(self.key, contexts, targets).sum())
            return _result(score, n, float(n), 1.0, self.scheme, integer_shape=True)
        a = _scores(derive_key(self.key, b"key_a"), contexts, targets)
        b = _scores(derive_key(self.key, b"key_b"), contexts, targets)
        score = float((np.stack([a, b], axis=-1) @ np.array([1 - self.alpha, self.alpha])).sum())
        variance = (1 - self.alpha) ** 2 + self.alpha**2
        integer = self.alpha in (0, 0.5, 1)
        shape = round(n / variance) if integer else n / variance
        return _result(score, n, shape, variance, self.scheme, integer_shape=integer)


def _scores(key: int, contexts: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return -np.log1p(-philox_uniform(key, contexts, targets).astype(np.float64))


def _result(
    score: float, n: int, shape: float, variance: float, scheme: str, *, integer_shape: bool
) -> DetectionResult:
    """P(Gamma(shape, 1) >= score / variance): vLLM's null, in log space (no underflow)."""
    x = score / variance
    if x <= 0:
        log_p = 0.0
    elif integer_shape:  # Erlang: sf(x) = exp(-x) * sum_{j<shape} x**j / j!
        j = np.arange(int(shape))
        log_p = -x + float(special.logsumexp(j * math.log(x) - special.gammaln(j + 1)))
    else:
        with np.errstate(divide="ignore"):
            log_p = float(np.log(special.gammaincc(shape, x)))
        if not math.isfinite(log_p):  # underflow: Q(a, x) <= Q(ceil a, x), exact and finite
            j = np.arange(math.ceil(shape))
            log_p = -x + float(special.logsumexp(j * math.log(x) - special.gammaln(j + 1)))
    log_p = min(log_p, 0.0)
    z = (x - shape) / math.sqrt(shape) if shape > 0 else 0.0
    return DetectionResult(n, score, z, math.exp(log_p), log_p / LN10, n, scheme)
