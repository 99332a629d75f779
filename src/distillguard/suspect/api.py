"""API mode: prompt a suspect behind an OpenAI-compatible endpoint and test what it writes.

The suspect's answers are tokenised with our tokenizer (the key's vocabulary: the
windows are ours to hash, whatever the suspect's own tokenizer) and tested as one
corpus: windows de-duplicated across every answer, prompt windows left out. A model
that learned our watermark writes green continuations more often than gamma.

The optional filter (`--frequent M`) scores only windows whose context occurs at least
M times in our own watermarked corpus: the contexts a student saw most often in
training, where it learned the bias best (Sander et al.). It selects by context alone,
which a clean suspect's choice of token cannot depend on, so the test stays exact.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from distillguard.engine.transformers_engine import ChatPrompt
from distillguard.errors import DistillguardError
from distillguard.watermark import windows as win

if TYPE_CHECKING:
    import openai

DEFAULT_MAX_TOKENS = 256
PARALLEL = 4  # requests in flight: a polite client of someone else's API


def ask(
    client: openai.OpenAI,
    model: str,
    prompts: Sequence[ChatPrompt],
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    on_answer: Callable[[int], None] | None = None,
) -> list[str]:
    """The suspect's answers, in prompt order (sampled at temperature 1: what the model
    learned, not its greedy mode)."""
    import openai as sdk

    def one(prompt: ChatPrompt) -> str:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        try:
            reply = client.chat.completions.create(
                model=model, messages=list(messages), max_tokens=max_tokens, temperature=1.0
            )
        except sdk.APIStatusError as exc:
            raise DistillguardError(
                f"the suspect API answered {exc.status_code}: {exc.message}"
            ) from None
        except sdk.APIConnectionError:
            raise DistillguardError("cannot reach the suspect API") from None
        if on_answer is not None:
            on_answer(1)
        return reply.choices[0].message.content or "" if reply.choices else ""

    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(one, prompts))


def frequent_contexts(corpus_ids: Sequence[Sequence[int]], width: int, at_least: int) -> set:
    """The contexts (as tuples) that occur at least `at_least` times in our corpus."""
    counts: Counter = Counter()
    for ids in corpus_ids:
        counts.update(tuple(ids[i - width : i]) for i in range(width, len(ids)))
    return {context for context, n in counts.items() if n >= at_least}


def answer_windows(
    answers: Sequence[Sequence[int]],
    prompts: Sequence[Sequence[int]],
    *,
    width: int,
    vocab_size: int,
    contexts: set | None = None,
) -> win.Windows:
    """The windows of the suspect's answers, de-duplicated across all of them, minus the
    prompts' windows; only those whose context is in `contexts`, if given."""
    packed = win.Sequences.pack(answers, vocab_size)
    found_contexts, tokens, segments, totals = packed.windows(width)
    if contexts is not None:
        keep = np.fromiter(
            (tuple(row) in contexts for row in found_contexts.tolist()),
            dtype=bool,
            count=len(tokens),
        )
        found_contexts, tokens, segments = found_contexts[keep], tokens[keep], segments[keep]
    excluded = win.Sequences.pack(prompts, vocab_size).windows(width)[:3]
    return win.distinct(
        found_contexts,
        tokens,
        segments,
        totals,
        excluded,
        vocab_size=vocab_size,
        pooled=True,
    )
