"""A distiller's student: a model trained on harvested answers, as an attacker trains one.

Plain supervised fine-tuning with the loss on the answer tokens only, on (prompt, answer)
pairs re-tokenised from the answers' text (a harvester never sees our token ids). Used by
`distillguard demo` and by benchmarks/distill_experiment.py; needs the `model` extra.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillguard.engine.bundled import cached_model_dir
from distillguard.engine.transformers_engine import TransformersEngine
from distillguard.suspect.reading import ReadItem
from distillguard.suspect.run import load_suspect


@dataclass(frozen=True)
class Recipe:
    """How a student is trained (chosen on a pilot: the smallest that memorises)."""

    epochs: int
    learning_rate: float
    batch_size: int
    min_steps: int = 0  # more epochs on small data: a model from scratch needs the steps
    # The token embeddings (tied to the output layer) kept as they are: a third less work
    # a step on a CPU, and the rest of the model still learns the answers.
    freeze_embeddings: bool = False

    def epochs_for(self, examples: int) -> int:
        batches = math.ceil(examples / self.batch_size)
        return max(self.epochs, math.ceil(self.min_steps / batches))


FINE_TUNE = Recipe(epochs=3, learning_rate=1e-4, batch_size=8)
SCRATCH = Recipe(epochs=40, learning_rate=2e-3, batch_size=4, min_steps=200)
# The demo's student: a quick fine-tune that still names its cohort far below 1e-6.
QUICK_FINE_TUNE = Recipe(epochs=2, learning_rate=1e-4, batch_size=8, freeze_embeddings=True)


def examples(engine: TransformersEngine, pairs: Sequence[tuple[str, str]]) -> list[ReadItem]:
    """Harvested (prompt, answer text) pairs as a student trains on them: the text
    re-tokenised, empty answers left out."""
    return [
        ReadItem(
            engine.chat_ids(prompt), engine.tokenizer(text, add_special_tokens=False)["input_ids"]
        )
        for prompt, text in pairs
        if text.strip()
    ]


def new_model(kind: str, teacher: TransformersEngine, cache_dir: Path, seed: int) -> Any:
    """`fine-tuned`: the bundled model's own weights; `scratch`: a small transformer
    (2 layers, 256 wide, the teacher's tokenizer) from random weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if kind == "fine-tuned":
        return load_suspect(cached_model_dir(cache_dir))
    shape = teacher.model.config
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=shape.vocab_size,
            hidden_size=256,
            intermediate_size=768,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            bos_token_id=shape.bos_token_id,
            eos_token_id=shape.eos_token_id,
        )
    )


def train(model: Any, data: list[ReadItem], recipe: Recipe, seed: int) -> None:
    """AdamW at a constant rate, loss on answer tokens only; leaves the model in eval mode."""
    import torch

    if recipe.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    learned = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(learned, lr=recipe.learning_rate, weight_decay=0.0)
    model.train()
    rng = random.Random(seed)
    for _ in range(recipe.epochs_for(len(data))):
        order = list(range(len(data)))
        rng.shuffle(order)
        for start in range(0, len(order), recipe.batch_size):
            chosen = [data[i] for i in order[start : start + recipe.batch_size]]
            width = max(len(i.prompt_ids) + len(i.answer_ids) for i in chosen)
            ids = torch.zeros((len(chosen), width), dtype=torch.long)
            mask = torch.zeros_like(ids)
            labels = torch.full_like(ids, -100)
            for row, item in enumerate(chosen):
                whole = item.ids
                ids[row, : len(whole)] = torch.from_numpy(whole)
                mask[row, : len(whole)] = 1
                labels[row, len(item.prompt_ids) : len(whole)] = torch.from_numpy(item.answer_ids)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimiser.step()
            optimiser.zero_grad()
    model.eval()
