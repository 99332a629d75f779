"""The cohort watermark inside vLLM: a custom logits processor (the `vllm` extra).

Start vLLM with it::

    VLLM_USE_V2_MODEL_RUNNER=0 DISTILLGUARD_GATEWAY__WATERMARK_KEY=/etc/dg/key.json \\
      python -m vllm.entrypoints.openai.api_server --model <dir> \\
      --logits-processors distillguard.engine.vllm_plugin:CohortWatermark

The key file and the number of cohorts are the gateway's own settings
(`gateway.watermark_key`, `gateway.cohorts`, from the same TOML file or
environment), so engine and gateway cannot disagree. The gateway puts each
request's cohort in `vllm_xargs` (`SamplingParams.extra_args`) and strips
whatever a client sent there; a request without one (sent to vLLM directly)
is marked under cohort 0: no client can opt out.

Each row is marked with the arithmetic of `Watermark.apply` (`TorchMarks`):
KGW adds delta to the green logits before vLLM's penalties and temperature, as
transformers does, and marks every request, greedy ones included. Gumbel-max
divides the row by its temperature and leaves one token, so vLLM's sampler can
only take it; it therefore samples from the whole softmax (top_p, top_k, min_p
and penalties no longer apply), and greedy requests (temperature 0) get no
Gumbel mark: a keyed sample is not the argmax they asked for. Where greedy or
truncated sampling matters, use KGW (the default). The processor implements vLLM's V1 sampler
interface (`vllm.v1.sample.logits_processor`), which is what vLLM runs on CPU;
on GPU, where vLLM 0.32 defaults to its V2 model runner, set
`VLLM_USE_V2_MODEL_RUNNER=0`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from distillguard.config import load_settings
from distillguard.errors import DistillguardError
from distillguard.watermark.cohorts import COHORT_ARG, Cohorts
from distillguard.watermark.keys import WatermarkKey
from distillguard.watermark.torch_ops import TorchMarks

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.config import VllmConfig

GREEDY = 1e-5  # vLLM's own bound below which a temperature means greedy decoding


def cohorts_from_settings() -> Cohorts:
    """The master key and cohort count the gateway uses, from distillguard's settings."""
    settings = load_settings().gateway
    if settings.watermark_key is None:
        raise DistillguardError(
            "the distillguard vLLM plug-in needs gateway.watermark_key "
            "(e.g. DISTILLGUARD_GATEWAY__WATERMARK_KEY=/path/key.json)"
        )
    return Cohorts(WatermarkKey.load(settings.watermark_key), settings.cohorts)


def cohort_of(params: SamplingParams, count: int) -> int:
    """The request's cohort from its extra arguments; ValueError (a 400) if malformed."""
    value = (params.extra_args or {}).get(COHORT_ARG, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
        raise ValueError(f"{COHORT_ARG} must be an integer in [0, {count}), got {value!r}")
    return value


@dataclass
class _Request:
    cohort: int
    temperature: float
    prompt_tail: list[int]  # the last k prompt ids: the first answer token's context
    output: list[int]  # vLLM's own list of generated ids, appended to as it decodes
    # Gumbel: each context this answer used, with the answer's length when it was used. vLLM
    # also samples rows still in (chunked) prefill and discards the sample: a context seen
    # again at the same length is that one step again, not a repeat.
    seen: dict[bytes, int] = field(default_factory=dict)


class CohortWatermark(LogitsProcessor):
    """Marks every row with its request's cohort sub-key."""

    _count: int | None = None  # the cohort count, for validation in vLLM's front end

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        if cls._count is None:
            cls._count = load_settings().gateway.cohorts
        cohort_of(sampling_params, cls._count)

    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool):
        cohorts = cohorts_from_settings()
        self.count = cohorts.count
        self.marks = TorchMarks([cohorts.watermark(c) for c in range(cohorts.count)])
        self.config = self.marks.config
        vocab = vllm_config.model_config.get_vocab_size()
        if vocab != self.config.vocab_size:
            raise DistillguardError(
                f"the model's vocabulary has {vocab} entries but the watermark key was made for "
                f"{self.config.vocab_size}: make a key for this model "
                f"(distillguard watermark keygen --vocab-size {vocab})"
            )
        self.requests: dict[int, _Request] = {}

    def is_argmax_invariant(self) -> bool:
        return False  # both schemes change which token wins

    def _new(self, params: SamplingParams, prompt: list[int] | None, output: list[int]):
        k = self.config.context_width
        tail = list(prompt or [])[-k:] if k else []
        return _Request(cohort_of(params, self.count), params.temperature, tail, output)

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.requests, batch_update, self._new)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        gumbel = self.config.scheme == "gumbel"
        rows = sorted(
            (index, request)
            for index, request in self.requests.items()
            if index < logits.shape[0] and not (gumbel and request.temperature < GREEDY)
        )
        if not rows:
            return logits
        contexts = np.array([self._context(r) for _, r in rows], dtype=np.int64)
        contexts = contexts.reshape(len(rows), self.config.context_width)
        which = np.array([r.cohort for _, r in rows], dtype=np.int64)
        # Usually every row is a request of ours, in order: mark the batch in place.
        whole = [i for i, _ in rows] == list(range(logits.shape[0]))
        index = None if whole else torch.tensor([i for i, _ in rows], device=logits.device)
        scores = logits if index is None else logits[index]
        repeated = None
        if gumbel:
            temperature = torch.tensor([r.temperature for _, r in rows], device=logits.device)
            scores = scores / temperature[:, None].to(scores.dtype)
            used = zip(rows, contexts, strict=True)
            repeated = np.array([self._repeated(r, c) for (_, r), c in used])
        marked = self.marks.apply(scores, contexts, which, repeated)
        if index is None:
            return marked
        logits[index] = marked
        return logits

    def _context(self, request: _Request) -> list[int]:
        """The last k ids of prompt + answer so far, left-padded with 0 like
        `Watermark.last_contexts`."""
        k = self.config.context_width
        if k == 0:
            return []
        recent = request.output[-k:]
        if len(recent) < k:
            recent = (request.prompt_tail + recent)[-k:]
        return [0] * (k - len(recent)) + recent

    @staticmethod
    def _repeated(request: _Request, context: np.ndarray) -> bool:
        window, length = context.tobytes(), len(request.output)
        first = request.seen.setdefault(window, length)
        return first != length
