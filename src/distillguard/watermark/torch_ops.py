"""The watermark on torch tensors: what any engine's sampler calls (needs torch).

Same arithmetic as `hashing.KeyedHash.vocabulary_values`, on int32 tensors:
two's-complement multiply/add wrap exactly like uint32 in numpy. Comparing
against the green threshold is done in the signed domain by folding 2**31 into
the per-row offset, so the whole vocabulary-wide step is one multiply, one add
and one compare per element, with no copy back to numpy.

One `TorchMarks` holds several watermarks of one configuration (the cohort
sub-keys of one master key) and marks each row of a batch with its own: an
engine that serves many accounts at once (vLLM) marks them all in one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from distillguard.errors import VocabularyMismatchError

if TYPE_CHECKING:
    from distillguard.watermark.core import Watermark

_SIGN = np.uint32(0x80000000)


def _as_int32(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(values.astype(np.uint32).view(np.int32))


class TorchMarks:
    """Bias (KGW) or choose (Gumbel) each row's next token with its watermark's keyed hash."""

    def __init__(self, watermarks: Sequence[Watermark]) -> None:
        if not watermarks:
            raise ValueError("TorchMarks needs at least one watermark")
        self.watermarks = list(watermarks)
        self.config = watermarks[0].config
        if any(w.config != self.config for w in self.watermarks):
            raise ValueError("the watermarks of one TorchMarks must share one configuration")
        self._tables = torch.stack([_as_int32(w.hash.token_table) for w in self.watermarks])
        self._device: torch.device | None = None

    def _tables_on(self, device: torch.device) -> torch.Tensor:
        if self._device != device:
            self._tables = self._tables.to(device)
            self._device = device
        return self._tables

    def signed_values(
        self, contexts: np.ndarray, which: np.ndarray, device: torch.device
    ) -> torch.Tensor:
        """int32 (rows, vocab) tensor equal to u(c, v) XOR 2**31 under row i's watermark
        `which[i]`, viewed as signed."""
        multiplier = np.empty(len(contexts), dtype=np.uint32)
        offset = np.empty(len(contexts), dtype=np.uint32)
        for index in np.unique(which):
            rows = which == index
            multiplier[rows], offset[rows] = self.watermarks[index].hash.context_params(
                contexts[rows]
            )
        tables = self._tables_on(device)
        multiplier_t = _as_int32(multiplier).to(device)[:, None]
        offset_t = _as_int32(offset ^ _SIGN).to(device)[:, None]
        if len(self.watermarks) == 1:
            signed = tables[0][None, :] * multiplier_t
        else:  # one row of tables per row of the batch, then in place: two passes fewer
            rows = torch.from_numpy(which.astype(np.int64)).to(device)
            signed = torch.index_select(tables, 0, rows).mul_(multiplier_t)
        return signed.add_(offset_t)

    def apply(
        self,
        scores: torch.Tensor,
        contexts: np.ndarray,
        which: np.ndarray | None = None,
        repeated: np.ndarray | None = None,
    ) -> torch.Tensor:
        """Marked scores for each row (KGW adds to `scores` in place and returns it; Gumbel
        returns a new tensor): `contexts` (rows, k) are the last k ids of each row,
        `which` each row's watermark (default: the first), `repeated` (Gumbel) the rows whose
        context this generation already used, which are sampled with fresh, unkeyed noise:
        Gumbel-max is deterministic given the context, so a repeated context would replay
        the same continuation forever (the detector de-duplicates windows: nothing is lost)."""
        if scores.shape[-1] != self.config.vocab_size:
            raise VocabularyMismatchError(
                f"model vocabulary has {scores.shape[-1]} entries but the watermark key was made "
                f"for {self.config.vocab_size}"
            )
        if which is None:
            which = np.zeros(len(contexts), dtype=np.int64)
        signed = self.signed_values(contexts, which, scores.device)
        if self.config.scheme == "kgw":
            green = signed < (self.watermarks[0].scheme.threshold - 2**31)
            return scores.add_(green, alpha=self.config.delta)
        if repeated is None:
            repeated = np.zeros(len(contexts), dtype=bool)
        return _gumbel_choice(signed, scores, repeated)


def _gumbel_choice(
    signed: torch.Tensor, scores: torch.Tensor, repeated: np.ndarray
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
