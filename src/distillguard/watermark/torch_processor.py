"""The watermark as a `transformers` LogitsProcessor (needs the `model` extra).

The arithmetic is `torch_ops.TorchMarks`, shared with the vLLM plug-in; this
adapter only finds each row's context and, for Gumbel, which contexts a row has
already used in this generation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import LogitsProcessor

from distillguard.watermark.torch_ops import TorchMarks

if TYPE_CHECKING:
    from distillguard.watermark.core import Watermark


class WatermarkLogitsProcessor(LogitsProcessor):
    """Bias (KGW) or choose (Gumbel) the next token with the keyed hash.

    Use one instance per `generate` call: for Gumbel it remembers which
    contexts each row has already used (see `TorchMarks.apply`).
    """

    def __init__(self, watermark: Watermark) -> None:
        self.watermark = watermark
        self.marks = TorchMarks([watermark])
        self._seen: list[set[bytes]] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        contexts = self.watermark.last_contexts(input_ids.detach().cpu().numpy())
        repeated = self._repeated(contexts) if self.watermark.config.scheme == "gumbel" else None
        return self.marks.apply(scores, contexts, repeated=repeated)

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
