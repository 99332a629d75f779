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
    items: Sequence[ReadItem], predicted: Sequence[np.ndarray], *, width: int, vocab_size: int
) -> win.Windows:
    """(our context, the suspect's prediction) windows, de-duplicated across the run,
    minus prompt windows.

    Only a context's first occurrence in an answer is scored. Where a context comes back,
    our text already shows what followed it the first time, chosen with the watermark's
    bias, and any model may copy that (in-context copying): a clean model would look
    watermarked. At a first occurrence the context's green list is fresh to everything the
    suspect has read, so its prediction is green with probability gamma, exactly.
    """
    contexts, tokens = [], []
    total = 0
    for item, guess in zip(items, predicted, strict=True):
        answer = np.asarray(item.answer_ids, dtype=np.int64)
        positions = np.arange(width, answer.size)
        total += positions.size
        if positions.size == 0:
            continue
        windows = answer[positions[:, None] + np.arange(-width, 0)[None, :]]
        first = _first_rows(windows)
        contexts.append(windows[first])
        tokens.append(np.asarray(guess, dtype=np.int64)[positions[first]])
    if max((int(t.max()) for t in tokens if t.size), default=0) >= vocab_size:
        raise VocabularyMismatchError(
            f"the suspect predicts token ids beyond the key's vocabulary ({vocab_size})"
        )
    scored = sum(t.size for t in tokens)
    prompts = win.Sequences.pack([item.prompt_ids for item in items], vocab_size)
    return win.distinct(
        np.concatenate(contexts) if contexts else np.zeros((0, width), np.int64),
        np.concatenate(tokens) if tokens else np.zeros(0, np.int64),
        np.zeros(scored, np.int64),
        np.asarray([total], np.int64),
        prompts.windows(width)[:3],
        vocab_size=vocab_size,
        pooled=True,
    )


def _first_rows(rows: np.ndarray) -> np.ndarray:
    """Mask of the rows (contexts) that occur for the first time, in order."""
    if rows.shape[1] == 0:  # no context at all: one green list, only the first counts
        first = np.zeros(rows.shape[0], dtype=bool)
        first[:1] = True
        return first
    _, index = np.unique(rows, axis=0, return_index=True)
    first = np.zeros(rows.shape[0], dtype=bool)
    first[index] = True
    return first
