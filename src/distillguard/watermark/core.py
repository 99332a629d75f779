"""`Watermark`: one key + one scheme configuration, for generation and detection."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np

from distillguard.errors import InputTooShortError, KeyFileError, VocabularyMismatchError
from distillguard.watermark import windows as win
from distillguard.watermark.hashing import KeyedHash
from distillguard.watermark.keys import WatermarkKey
from distillguard.watermark.schemes import KGW, Gumbel, Scheme, null_tests

SchemeName = Literal["kgw", "gumbel"]

# The bundled model's vocabulary; keys made for other models record their own.
DEFAULT_VOCAB_SIZE = 49152


@dataclass(frozen=True)
class WatermarkConfig:
    """Everything generation and detection must agree on (stored in the key file)."""

    scheme: SchemeName = "kgw"
    gamma: float = 0.25
    delta: float = 2.0
    context_width: int = 2
    vocab_size: int = DEFAULT_VOCAB_SIZE

    def __post_init__(self) -> None:
        if self.scheme not in ("kgw", "gumbel"):
            raise ValueError(f"unknown watermark scheme {self.scheme!r} (kgw or gumbel)")
        if not 0.0 < self.gamma < 1.0:
            raise ValueError(f"gamma must be in (0, 1), got {self.gamma}")
        if self.delta < 0.0:
            raise ValueError(f"delta must be >= 0, got {self.delta}")
        if self.context_width < 0:
            raise ValueError("context_width must be >= 0")
        if self.vocab_size < 2:
            raise ValueError("vocab_size must be >= 2")

    @classmethod
    def from_params(cls, params: dict[str, Any], **overrides: Any) -> WatermarkConfig:
        known = {f for f in cls.__dataclass_fields__}
        merged = {k: v for k, v in params.items() if k in known}
        merged.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**merged)
        except (TypeError, ValueError) as exc:
            raise KeyFileError(f"invalid watermark parameters: {exc}") from None

    def to_params(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DetectionResult:
    """One detection: how many windows were scored and how surprising their score is."""

    scored: int
    score: float  # KGW: number of green tokens; Gumbel: sum of -log(1 - u)
    z: float
    p_value: float
    log10_p_value: float
    total_windows: int
    scheme: str

    @property
    def green(self) -> int | None:
        return round(self.score) if self.scheme == "kgw" else None

    @property
    def green_fraction(self) -> float | None:
        if self.scheme != "kgw" or self.scored == 0:
            return None
        return self.score / self.scored

    def to_dict(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "scored": self.scored,
            "total_windows": self.total_windows,
            "green": self.green,
            "green_fraction": self.green_fraction,
            "score": self.score,
            "z": self.z,
            "p_value": self.p_value,
            "log10_p_value": self.log10_p_value,
        }


class Watermark:
    """A keyed watermark: bias logits when generating, test token ids when detecting."""

    def __init__(
        self,
        key: WatermarkKey,
        scheme: SchemeName = "kgw",
        gamma: float = 0.25,
        delta: float = 2.0,
        context_width: int = 2,
        vocab_size: int = DEFAULT_VOCAB_SIZE,
    ) -> None:
        self.key = key
        self.config = WatermarkConfig(scheme, gamma, delta, context_width, vocab_size)

    @classmethod
    def from_key(cls, key: WatermarkKey, **overrides: Any) -> Watermark:
        """Use the parameters stored with the key, optionally overridden."""
        return cls(key, **WatermarkConfig.from_params(key.params, **overrides).to_params())

    def __repr__(self) -> str:
        return f"Watermark(key_id={self.key.key_id!r}, {self.config})"

    @cached_property
    def scheme(self) -> Scheme:
        if self.config.scheme == "kgw":
            return KGW(self.config.gamma, self.config.delta)
        return Gumbel()

    @cached_property
    def hash(self) -> KeyedHash:
        return KeyedHash.for_key(self.key, self.config.scheme, self.config.vocab_size)

    # -- generation ---------------------------------------------------------------

    def apply(self, logits: np.ndarray, context_ids: np.ndarray) -> np.ndarray:
        """Framework-free generation step: logits (batch, vocab) + ids so far -> new logits."""
        logits = np.asarray(logits)
        if logits.ndim != 2 or logits.shape[1] != self.config.vocab_size:
            raise VocabularyMismatchError(
                f"logits have shape {logits.shape}; expected (batch, {self.config.vocab_size})"
            )
        contexts = self.last_contexts(np.asarray(context_ids))
        return self.scheme.bias(logits, self.hash.vocabulary_values(contexts))

    def last_contexts(self, context_ids: np.ndarray) -> np.ndarray:
        """The last k ids of each row; rows shorter than k are left-padded with id 0."""
        k = self.config.context_width
        ids = np.atleast_2d(context_ids).astype(np.int64, copy=False)
        if ids.shape[1] < k:
            ids = np.pad(ids, ((0, 0), (k - ids.shape[1], 0)))
        return ids[:, ids.shape[1] - k :]

    # -- detection ----------------------------------------------------------------

    def detect(
        self,
        token_ids: Sequence[int] | np.ndarray,
        prompt_ids: Sequence[int] | np.ndarray | None = None,
        scoreable: Sequence[bool] | np.ndarray | None = None,
    ) -> DetectionResult:
        """Test one token sequence; windows that occur in the prompt are not scored.

        ``scoreable`` (one bool per token, e.g. `engine.token_stats(...).entropy >= 1.0`)
        limits scoring to chosen tokens; see `select` for the rule it must obey.
        """
        result = self.detect_batch(
            [token_ids],
            None if prompt_ids is None else [prompt_ids],
            None if scoreable is None else [scoreable],
        )[0]
        if result.total_windows == 0:
            raise InputTooShortError(
                f"text has no token window to score: it needs more than "
                f"{self.config.context_width} token(s)"
            )
        return result

    def detect_batch(
        self,
        sequences: Sequence[Sequence[int] | np.ndarray],
        prompts: Sequence[Sequence[int] | np.ndarray | None] | None = None,
        scoreable: Sequence[Sequence[bool] | np.ndarray] | None = None,
    ) -> list[DetectionResult]:
        """Test many sequences in one vectorised pass (each de-duplicated on its own)."""
        selected = self._select(sequences, prompts, scoreable, pooled=False)
        per_token = self.scheme.token_scores(self.hash.values(selected.contexts, selected.tokens))
        n = selected.n_segments
        scored = np.bincount(selected.segments, minlength=n)
        sums = np.bincount(selected.segments, weights=per_token, minlength=n)
        return self._results(sums, scored, selected.total)

    def detect_corpus(
        self,
        sequences: Sequence[Sequence[int] | np.ndarray],
        prompts: Sequence[Sequence[int] | np.ndarray | None] | None = None,
        scoreable: Sequence[Sequence[bool] | np.ndarray] | None = None,
    ) -> DetectionResult:
        """One test over a whole corpus, de-duplicated across all of it."""
        return self.detect_windows(self._select(sequences, prompts, scoreable, pooled=True))

    def detect_windows(self, windows: win.Windows) -> DetectionResult:
        """One test over windows already selected (`windows.select` / `windows.distinct`):
        how a suspect test scores one window set under many keys."""
        per_token = self.scheme.token_scores(self.hash.values(windows.contexts, windows.tokens))
        return self._results(
            np.array([per_token.sum()]), np.array([len(windows)]), np.array([windows.total.sum()])
        )[0]

    def _select(self, sequences, prompts, scoreable, *, pooled: bool) -> win.Windows:
        vocab = self.config.vocab_size
        packed = win.Sequences.pack(sequences, vocab)
        packed_prompts = None
        if prompts is not None:
            if len(prompts) != len(sequences):
                raise ValueError("prompts must align with sequences")
            packed_prompts = win.Sequences.pack(prompts, vocab)
        mask = None
        if scoreable is not None:
            mask = win.pack_mask(scoreable, packed)
        return win.select(
            packed,
            self.config.context_width,
            packed_prompts,
            vocab_size=vocab,
            pooled=pooled,
            scoreable=mask,
        )

    def _results(
        self, scores: np.ndarray, scored: np.ndarray, totals: np.ndarray
    ) -> list[DetectionResult]:
        tests = null_tests(self.scheme, scores, scored)
        return [
            DetectionResult(
                scored=int(n),
                score=float(score),
                z=test.z,
                p_value=test.p_value,
                log10_p_value=test.log10_p_value,
                total_windows=int(total),
                scheme=self.config.scheme,
            )
            for score, n, total, test in zip(scores, scored, totals, tests, strict=True)
        ]
