"""Open-weight mode ("reading mode", Sander et al., NeurIPS 2024): let the suspect model
read our watermarked answers and test what it would have written next.

For each answer token t the suspect's top-1 prediction from everything before t is
paired with our text's own context (the k tokens before t): the window (context,
prediction) is scored with the watermark test. A model that never learned from our
outputs predicts as a function of the text alone, independent of the key, so each
distinct window is green with probability gamma: the test stays exact. A model trained
on our outputs learned to prefer green continuations, and its predictions show it.
Windows are de-duplicated across the whole run, and those present in the prompts (the
user's words, not ours) are left out (`watermark.windows.distinct`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from distillguard.errors import VocabularyMismatchError
from distillguard.watermark import windows as win

DEFAULT_BATCH = 8


@dataclass(frozen=True)
class ReadItem:
    """One answer of ours, as token ids: what the suspect reads, and which part we wrote."""

    prompt_ids: list[int]  # the chat-templated prompt (read, never scored)
    answer_ids: list[int]  # our watermarked answer


def predictions(
    model: Any,
    items: Sequence[ReadItem],
    *,
    batch_size: int = DEFAULT_BATCH,
    on_batch: Callable[[int], None] | None = None,
) -> list[np.ndarray]:
    """For each item, the suspect's top-1 next token at every answer position (int64,
    aligned with `answer_ids`): one batched, right-padded forward pass per batch, in
    order of length so that padding stays small."""
    import torch

    vocab = int(model.config.vocab_size)
    order = sorted(range(len(items)), key=lambda i: len(items[i].prompt_ids + items[i].answer_ids))
    found: list[np.ndarray | None] = [None] * len(items)
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        rows = [items[i].prompt_ids + items[i].answer_ids for i in chosen]
        width = max(len(r) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, row in enumerate(rows):
            if max(row, default=0) >= vocab:
                raise VocabularyMismatchError(
                    f"token id {max(row)} is outside the suspect model's vocabulary ({vocab})"
                )
            ids[j, : len(row)] = torch.tensor(row)
            mask[j, : len(row)] = 1
        with torch.inference_mode():
            top = model(input_ids=ids, attention_mask=mask).logits.argmax(dim=-1).numpy()
        for j, i in enumerate(chosen):
            begin, end = len(items[i].prompt_ids), len(rows[j])
            # The logits at position p predict the token at p + 1.
            found[i] = top[j, begin - 1 : end - 1].astype(np.int64)
        if on_batch is not None:
            on_batch(len(chosen))
    return [f for f in found if f is not None]


def reading_windows(
    items: Sequence[ReadItem],
    predicted: Sequence[np.ndarray],
    *,
    width: int,
    vocab_size: int,
    groups: Sequence[int] | None = None,
) -> win.Windows:
    """(our context, the suspect's prediction) windows, de-duplicated across the run (or
    within each group: `groups` gives each item's, e.g. its cohort, and becomes the
    windows' `segments`), minus prompt windows.

    Only a context's first occurrence in an answer is scored. Where a context comes back,
    our text already shows what followed it the first time, chosen with the watermark's
    bias, and any model may copy that (in-context copying): a clean model would look
    watermarked. At a first occurrence the context's green list is fresh to everything the
    suspect has read, so its prediction is green with probability gamma, exactly.
    """
    answers = win.Sequences.pack([item.answer_ids for item in items], vocab_size)
    guesses = win.Sequences.pack(predicted, vocab_size)  # checks the suspect's ids too
    if not np.array_equal(answers.lengths, guesses.lengths):
        raise ValueError("one prediction per answer token is needed")
    positions, segments, counts = answers.positions(width)
    contexts = answers.contexts_at(positions, width)
    tokens = guesses.flat[positions]  # the same positions, the suspect's tokens
    first = win.first_contexts(contexts, segments)
    prompt_contexts, prompt_tokens, prompt_segments, _ = win.Sequences.pack(
        [item.prompt_ids for item in items], vocab_size
    ).windows(width)
    if groups is None:
        totals = np.asarray([counts.sum()], np.int64)
        return win.distinct(
            contexts[first],
            tokens[first],
            segments[first],
            totals,
            (prompt_contexts, prompt_tokens, prompt_segments),
            vocab_size=vocab_size,
            pooled=True,
        )
    group_of = np.asarray(groups, dtype=np.int64)
    if group_of.shape != (len(items),) or (group_of.size and group_of.min() < 0):
        raise ValueError("one non-negative group per item is needed")
    size = int(group_of.max()) + 1 if group_of.size else 0
    return win.distinct(
        contexts[first],
        tokens[first],
        group_of[segments[first]],
        np.bincount(group_of, weights=counts, minlength=size).astype(np.int64),
        (prompt_contexts, prompt_tokens, group_of[prompt_segments]),
        vocab_size=vocab_size,
    )
