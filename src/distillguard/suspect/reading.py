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

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from distillguard.errors import VocabularyMismatchError
from distillguard.watermark import windows as win

DEFAULT_BATCH = 8


@dataclass(frozen=True, eq=False)
class ReadItem:
    """One answer of ours, as token ids: what the suspect reads, and which part we wrote.

    Held as int64 arrays from the start: the forward pass and the window selection both
    take them as they are (converting lists of ids is a third of the selection's time)."""

    prompt_ids: np.ndarray  # the chat-templated prompt (read, never scored)
    answer_ids: np.ndarray  # our watermarked answer

    def __post_init__(self) -> None:
        for name in ("prompt_ids", "answer_ids"):
            ids = np.asarray(getattr(self, name), dtype=np.int64)
            if ids.ndim != 1:
                raise ValueError(f"{name} must be a flat sequence of token ids")
            object.__setattr__(self, name, ids)

    @property
    def ids(self) -> np.ndarray:
        """What the suspect reads: the prompt, then our answer."""
        return np.concatenate([self.prompt_ids, self.answer_ids])


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
    order = sorted(
        range(len(items)), key=lambda i: len(items[i].prompt_ids) + len(items[i].answer_ids)
    )
    found: list[np.ndarray | None] = [None] * len(items)
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        rows = [items[i].ids for i in chosen]
        width = max(len(r) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, row in enumerate(rows):
            if row.size and row.max() >= vocab:
                raise VocabularyMismatchError(
                    f"token id {row.max()} is outside the suspect model's vocabulary ({vocab})"
                )
            ids[j, : len(row)] = torch.from_numpy(row)
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
    workers: int | None = None,
) -> win.Windows:
    """(our context, the suspect's prediction) windows, de-duplicated across the run (or
    within each group: `groups` gives each item's, e.g. its cohort, and becomes the
    windows' `segments`), minus prompt windows.

    Only a context's first occurrence in an answer is scored. Where a context comes back,
    our text already shows what followed it the first time, chosen with the watermark's
    bias, and any model may copy that (in-context copying): a clean model would look
    watermarked. At a first occurrence the context's green list is fresh to everything the
    suspect has read, so its prediction is green with probability gamma, exactly.

    Groups share nothing, so they are selected on `workers` threads (default: the CPUs),
    each taking a contiguous range of groups (numpy's sorts and arithmetic release the GIL).
    """
    if len(predicted) != len(items):
        raise ValueError("one array of predictions per item is needed")
    if groups is None:  # pooled: one group, de-duplicated across the whole run
        return _select(items, predicted, np.zeros(len(items), np.int64), width, vocab_size, 1)
    group_of = np.asarray(groups, dtype=np.int64)
    if group_of.shape != (len(items),) or (group_of.size and group_of.min() < 0):
        raise ValueError("one non-negative group per item is needed")
    size = int(group_of.max()) + 1 if group_of.size else 0
    parts = _ranges(items, group_of, size, workers or os.cpu_count() or 1)
    if len(parts) == 1:
        return _select(items, predicted, group_of, width, vocab_size, size)
    with ThreadPoolExecutor(len(parts)) as pool:
        done = list(
            pool.map(
                lambda chosen: _select(
                    [items[i] for i in chosen],
                    [predicted[i] for i in chosen],
                    group_of[chosen],
                    width,
                    vocab_size,
                    size,
                ),
                parts,
            )
        )
    return win.Windows(  # ranges in group order: the segments stay sorted
        np.concatenate([w.contexts for w in done]),
        np.concatenate([w.tokens for w in done]),
        np.concatenate([w.segments for w in done]),
        size,
        np.sum([w.total for w in done], axis=0),
    )


def _ranges(
    items: Sequence[ReadItem], group_of: np.ndarray, size: int, workers: int
) -> list[np.ndarray]:
    """Items split into at most `workers` contiguous ranges of groups of similar work."""
    if workers < 2 or size < 2:
        return [np.arange(len(items))]
    work = np.bincount(group_of, weights=[len(i.answer_ids) for i in items], minlength=size)
    cut = np.searchsorted(np.cumsum(work), work.sum() * np.arange(1, workers) / workers)
    bounds = np.unique(np.concatenate([[0], cut + 1, [size]]).clip(0, size))
    part_of = np.searchsorted(bounds, group_of, side="right") - 1
    parts = [np.flatnonzero(part_of == k) for k in range(len(bounds) - 1)]
    return [p for p in parts if p.size]


def _select(
    items: Sequence[ReadItem],
    predicted: Sequence[np.ndarray],
    group_of: np.ndarray,
    width: int,
    vocab_size: int,
    size: int,
) -> win.Windows:
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
    return win.distinct(
        contexts[first],
        tokens[first],
        group_of[segments[first]],
        np.bincount(group_of, weights=counts, minlength=size).astype(np.int64),
        (prompt_contexts, prompt_tokens, group_of[prompt_segments]),
        vocab_size=vocab_size,
    )
