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


# Gumbel-max in two steps. float32 over the whole vocabulary finds each row's few
# candidates; float64 on those alone picks the winner, so the choice equals the float64
# numpy reference (in float32 alone about 1 step in 200 went the other way), at a fifth of
# float64's cost over every token. -log(u) is taken as -log1p(u - 1), exact where u is
# near 1; near 0 (and where u rounds to 0) the clamp and the rounding move the noise by
# under 0.06, so every token whose float32 value is within MARGIN of the row's maximum
# is a candidate, and a row with more than CANDIDATES of them goes wholly to float64.
_MARGIN = 0.25
_CANDIDATES = 4
_ABOVE_MINUS_ONE = -1.0 + 2.0**-24  # the float32 next to -1: u - 1 never rounds to -1


def _exact_noise(shifted: torch.Tensor) -> torch.Tensor:
    """float64 Gumbel noise of `to_unit_interval`: `shifted` is the 24-bit value - 2**23."""
    uniform = (shifted.to(torch.float64) + ((1 << 23) + 0.5)) / float(1 << 24)
    return -torch.log(-torch.log(uniform))


def _gumbel_choice(
    signed: torch.Tensor, scores: torch.Tensor, repeated: np.ndarray
) -> torch.Tensor:
    # Undo the sign fold: an arithmetic shift of u XOR 2**31 is (u >> 8) - 2**23.
    shifted = signed >> 8
    noisy = shifted.to(torch.float32).mul_(1.0 / (1 << 24)).add_(2.0**-25 - 0.5)  # u - 1
    fresh = torch.from_numpy(repeated.astype(bool)).to(scores.device)
    if repeated.any():
        noisy[fresh] = torch.rand_like(noisy[fresh]).sub_(1.0)
    noisy.clamp_(min=_ABOVE_MINUS_ONE).log1p_().neg_().log_()
    noisy = torch.sub(scores.to(torch.float32), noisy, out=noisy)  # scores + Gumbel noise
    top = noisy.topk(min(_CANDIDATES, noisy.shape[-1]), dim=-1)
    # In vocabulary order, so that an exact tie goes to the lower id, as numpy's argmax.
    candidates = top.indices.sort(dim=-1).values
    exact = scores.gather(1, candidates).to(torch.float64) + _exact_noise(
        shifted.gather(1, candidates)
    )
    choice = candidates.gather(1, exact.argmax(-1, keepdim=True))[:, 0]
    crowded = (top.values[:, -1] >= top.values[:, 0] - _MARGIN) & ~fresh
    if crowded.any():
        whole = scores[crowded].to(torch.float64) + _exact_noise(shifted[crowded])
        choice[crowded] = whole.argmax(-1)
    choice = torch.where(fresh, top.indices[:, 0], choice)  # unkeyed noise: float32 will do
    forced = noisy.fill_(float("-inf")).scatter_(-1, choice[:, None], 0.0)
    return forced.to(scores.dtype)
