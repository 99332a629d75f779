"""Batched chat generation with a `transformers` causal LM, optionally watermarked."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distillguard.errors import VocabularyMismatchError
from distillguard.watermark import Watermark

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ChatPrompt = str | Sequence[dict[str, str]]


@dataclass(frozen=True)
class TokenStats:
    """Per answer token, under the unbiased model: surprise and next-token entropy (nats)."""

    nll: np.ndarray  # -log p(token | everything before it)
    entropy: np.ndarray  # entropy of the distribution the token was drawn from

    @property
    def perplexity(self) -> float:
        return float(np.exp(self.nll.mean()))


@dataclass(frozen=True)
class Completion:
    prompt_ids: list[int]
    completion_ids: list[int]
    text: str
    finish_reason: str  # "stop" (end-of-turn token) or "length"


class TransformersEngine:
    """Chat-templated, left-padded batch generation on one `transformers` model."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model = model
        self.tokenizer = tokenizer

    @classmethod
    def bundled(cls, cache_dir: Path, on_convert=None) -> TransformersEngine:
        from distillguard.engine.bundled import load_model

        return cls(*load_model(cache_dir, on_convert))

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    def chat_ids(self, prompt: ChatPrompt) -> list[int]:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return list(
            self.tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
        )

    def check_watermark(self, watermark: Watermark) -> None:
        if watermark.config.vocab_size != self.vocab_size:
            raise VocabularyMismatchError(
                f"the watermark key is for a vocabulary of {watermark.config.vocab_size} tokens "
                f"but the model has {self.vocab_size}"
            )

    def token_stats(self, prompt_ids: Sequence[int], completion_ids: Sequence[int]) -> TokenStats:
        """One forward pass over prompt + answer: the answer's per-token NLL and entropy.

        The entropy lets a detector score only the windows where the model had a
        real choice (SWEET, Lee et al. 2023): a selection made from the text
        alone, never the key, so the exact p-value stays exact.
        """
        import torch

        if not prompt_ids:
            raise ValueError("token_stats needs the prompt: the first answer token depends on it")
        if not completion_ids:
            return TokenStats(np.zeros(0), np.zeros(0))
        ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
        with torch.inference_mode():
            logits = self.model(ids).logits[0, len(prompt_ids) - 1 : -1].float()
        log_probs = torch.log_softmax(logits, dim=-1)
        targets = ids[0, len(prompt_ids) :]
        nll = -log_probs.gather(1, targets[:, None])[:, 0]
        entropy = -(log_probs.exp() * log_probs).sum(dim=-1)
        return TokenStats(nll.numpy(), entropy.numpy())

    def generate(
        self,
        prompts: Sequence[ChatPrompt],
        *,
        max_new_tokens: int = 200,
        temperature: float = 1.0,
        top_p: float = 1.0,
        watermark: Watermark | None = None,
        batch_size: int = 16,
        seed: int | None = None,
        min_new_tokens: int | None = None,
        on_batch: Callable[[int], None] | None = None,
        streamer: Any = None,
    ) -> list[Completion]:
        """Answer every prompt; batches are formed from prompts of similar length.

        A `transformers` streamer (one prompt only) receives the new token ids
        as they are sampled, for serving streamed answers.
        """
        import torch

        if streamer is not None and len(prompts) != 1:
            raise ValueError("a streamer follows exactly one prompt")
        if watermark is not None:
            self.check_watermark(watermark)
        if seed is not None:
            torch.manual_seed(seed)
        encoded = [self.chat_ids(p) for p in prompts]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        results: list[Completion | None] = [None] * len(encoded)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            # Fresh processors per `generate` call: Gumbel's tracks contexts per call.
            args = self._sampling_args(
                max_new_tokens, temperature, top_p, watermark, min_new_tokens
            )
            if streamer is not None:
                args["streamer"] = streamer
            outputs = self._generate_batch([encoded[i] for i in batch], args)
            for index, completion in zip(batch, outputs, strict=True):
                results[index] = completion
            if on_batch is not None:
                on_batch(len(batch))
        return [r for r in results if r is not None]

    def _sampling_args(
        self,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        watermark: Watermark | None,
        min_new_tokens: int | None,
    ) -> dict[str, Any]:
        from transformers import LogitsProcessorList, TemperatureLogitsWarper

        from distillguard.watermark.torch_processor import WatermarkLogitsProcessor

        args: dict[str, Any] = {"max_new_tokens": max_new_tokens}
        if min_new_tokens is not None:
            args["min_new_tokens"] = min_new_tokens
        if watermark is None or watermark.config.scheme == "kgw":
            args.update(do_sample=True, temperature=temperature, top_p=top_p)
            if watermark is not None:
                args["logits_processor"] = LogitsProcessorList(
                    [WatermarkLogitsProcessor(watermark)]
                )
        else:
            # Gumbel-max is itself the sampler: scale by the temperature first,
            # then the processor leaves exactly one token for greedy decoding.
            processors = [TemperatureLogitsWarper(temperature), WatermarkLogitsProcessor(watermark)]
            args.update(do_sample=False, logits_processor=LogitsProcessorList(processors))
        return args

    def _generate_batch(self, batch: list[list[int]], args: dict[str, Any]) -> list[Completion]:
        import torch

        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids, attention_mask=attention, pad_token_id=pad_id, **args
            )
        stop_ids = _stop_ids(self.model.generation_config.eos_token_id)
        completions = []
        for row, ids in enumerate(batch):
            new = output[row, width:].tolist()
            cut = next((i for i, t in enumerate(new) if t in stop_ids), None)
            kept = new if cut is None else new[:cut]
            completions.append(
                Completion(
                    prompt_ids=ids,
                    completion_ids=kept,
                    text=self.tokenizer.decode(kept, skip_special_tokens=True),
                    finish_reason="length" if cut is None else "stop",
                )
            )
        return completions


def _stop_ids(eos: int | list[int] | None) -> set[int]:
    if eos is None:
        return set()
    return {eos} if isinstance(eos, int) else set(eos)
