"""The watermark as a `transformers` LogitsProcessor (needs the `model` extra).

Same arithmetic as `hashing.KeyedHash.vocabulary_values`, on int32 tensors:
two's-complement multiply/add wrap exactly like uint32 in numpy. Comparing
against the green threshold is done in the signed domain by folding 2**31 into
the per-row offset, so the whole vocabulary-wide step is one multiply, one add
and one compare per element, with no copy back to numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import LogitsProcessor

from distillguard.errors import VocabularyMismatchError

if TYPE_CHECKING:
    from distillguard.watermark.core import Watermark

_SIGN = np.uint32(0x80000000)


def _as_int32(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(values.astype(np.uint32).view(np.int32))


class WatermarkLogitsProcessor(LogitsProcessor):
    """Bias (KGW) or choose (Gumbel) the next token with the keyed hash.

    Use one instance per `generate` call: for Gumbel it remembers which
    contexts each row has already used. Gumbel-max is deterministic given the
    context, so a repeated context would replay the same continuation forever;
    instead a repeated context is sampled with fresh, unkeyed noise (the
    detector de-duplicates windows, so nothing is lost).
    """

    def __init__(self, watermark: Watermark) -> None:
        self.watermark = watermark
        self._table = _as_int32(watermark.hash.token_table)
        self._device: torch.device | None = None
        self._seen: list[set[bytes]] = []

    def _table_on(self, device: torch.device) -> torch.Tensor:
        if self._device != device:
            self._table = self._table.to(device)
            self._device = device
        return self._table

    def signed_values(self, contexts: np.ndarray, device: torch.device) -> torch.Tensor:
        """int32 (batch, vocab) tensor equal to u(c, v) XOR 2**31, viewed as signed."""
        multiplier, offset = self.watermark.hash.context_params(contexts)
        multiplier_t = _as_int32(multiplier).to(device)[:, None]
        offset_t = _as_int32(offset ^ _SIGN).to(device)[:, None]
        return self._table_on(device)[None, :] * multiplier_t + offset_t

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        config = self.watermark.config
        if scores.shape[-1] != config.vocab_size:
            raise VocabularyMismatchError(
                f"model vocabulary has {scores.shape[-1]} entries but the watermark key was made "
                f"for {config.vocab_size}"
            )
        contexts = self.watermark.last_contexts(input_ids.detach().cpu().numpy())
        signed = self.signed_values(contexts, scores.device)
        if config.scheme == "kgw":
            green = signed < (self.watermark.scheme.threshold - 2**31)
            return torch.where(green, scores + config.delta, scores)
        return self._gumbel_choice(signed, scores, self._repeated(contexts))

    def _repeated(self, contexts: np.ndarray) -> np.ndarray:
        """Which rows reuse a context they already used in this generation."""
        rows = contexts.shape[0]
        if len(self._seen) != rows:
            self._seen = [set() for _ in range(rows)]
        repeated = np.zeros(rows, dtype=bool)
        for row, context in enumerate(contexts):
            window = context.tobytes()
            repeated[row] = window in self._seen[row]
            self._seen[row].add(window)
        return repeated

    def _gumbel_choice(
        self, signed: torch.Tensor, scores: torch.Tensor, repeated: np.ndarray
    ) -> torch.Tensor:
        # Undo the sign fold and keep 24 bits, as `to_unit_interval` does. The noise and the
        # sum are in float64 like the numpy reference: in float32 a near-tie between two
        # tokens could be decided the other way (about 1 Gumbel step in 200 differed).
        high = ((signed >> 8) ^ (1 << 23)) & 0xFFFFFF
        uniform = (high.to(torch.float64) + 0.5) / float(1 << 24)
        if repeated.any():
            rows = torch.from_numpy(repeated).to(scores.device)
            fresh = torch.rand_like(uniform).clamp_(1e-7, 1 - 1e-7)
            uniform = torch.where(rows[:, None], fresh, uniform)
        gumbel = -torch.log(-torch.log(uniform))
        choice = torch.argmax(scores.to(torch.float64) + gumbel, dim=-1)
        forced = torch.full_like(scores, float("-inf"))
        return forced.scatter_(-1, choice[:, None], 0.0)
