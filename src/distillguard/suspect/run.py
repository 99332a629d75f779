"""A whole suspect test, as `distillguard suspect test` runs it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillguard.errors import DistillguardError, VocabularyMismatchError
from distillguard.suspect.corpus import Answer, Corpus
from distillguard.suspect.reading import ReadItem, predictions, reading_windows
from distillguard.suspect.verdict import DEFAULT_ALPHA, Verdict, judge
from distillguard.watermark.core import WatermarkConfig
from distillguard.watermark.keys import WatermarkKey
from distillguard.watermark.windows import Windows

if TYPE_CHECKING:
    from distillguard.engine.transformers_engine import TransformersEngine

DEFAULT_BUDGET = 50_000  # answer tokens read: ~4 min on 2 CPU cores for SmolLM2-135M


def load_suspect(path: Path) -> Any:
    """A causal LM from a transformers directory or a GGUF file, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    from distillguard.engine.bundled import _quiet_transformers

    if not path.exists():
        raise DistillguardError(f"suspect model {path}: no such file or directory")
    _quiet_transformers()
    try:
        if path.is_file():
            if path.suffix != ".gguf":
                raise DistillguardError(f"suspect model {path}: a file must be a .gguf")
            model = AutoModelForCausalLM.from_pretrained(
                str(path.parent), gguf_file=path.name, dtype=torch.float32
            )
        else:
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().split("\n")[0]
        raise DistillguardError(f"suspect model {path}: cannot load ({first})") from None
    model.eval()
    return model


@dataclass(frozen=True)
class Reading:
    """What the suspect predicted over our answers, as windows ready to score under any
    key: one set per cohort (when the corpus says each answer's cohort) or one pooled."""

    items: list[ReadItem]
    windows: Windows | dict[int, Windows]


def read(
    model: Any,
    corpus: Corpus,
    ours: TransformersEngine,
    config: WatermarkConfig,
    *,
    cohorts: int | None = None,
    budget: int = DEFAULT_BUDGET,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> Reading:
    """Open-weight mode's forward passes over `corpus` (tokenised as `ours`, the model
    that wrote it, did) up to `budget` answer tokens.

    With `cohorts` and a corpus that says each answer's cohort (the event export), the
    windows are kept per cohort, and the budget is spread over the cohorts (one answer of
    each in turn) so that every cohort is read."""
    vocab = int(model.config.vocab_size)
    if vocab != config.vocab_size:
        raise VocabularyMismatchError(
            f"the suspect model has a vocabulary of {vocab} tokens and the key {config.vocab_size}:"
            " reading mode needs a suspect that shares our tokenizer (use API mode otherwise)"
        )
    per_cohort = cohorts is not None and all(a.cohort is not None for a in corpus.answers)
    if per_cohort:
        beyond = max(a.cohort or 0 for a in corpus.answers)
        if beyond >= (cohorts or 0):
            raise DistillguardError(
                f"the corpus has answers of cohort {beyond}, but --cohorts is {cohorts}: "
                "give the gateway's number of cohorts"
            )
    chosen: list[Answer] = []
    items: list[ReadItem] = []
    used = 0
    for answer in _in_turn(corpus.answers) if per_cohort else corpus.answers:
        ids = _answer_ids(answer, ours)
        if not ids:
            continue
        chosen.append(answer)
        items.append(ReadItem(ours.chat_ids(answer.prompt), ids))
        used += len(ids)
        if used >= budget:
            break
    predicted = predictions(model, items, batch_size=batch_size, on_batch=on_batch)
    selected = reading_windows(
        items,
        predicted,
        width=config.context_width,
        vocab_size=config.vocab_size,
        groups=[a.cohort or 0 for a in chosen] if per_cohort else None,
    )
    if len(selected) == 0:
        raise DistillguardError("no window to score: the answers are too short")
    windows = selected.by_segment() if per_cohort else selected
    return Reading(items, windows)


def reading_test(
    key: WatermarkKey,
    model: Any,
    corpus: Corpus,
    ours: TransformersEngine,
    *,
    cohorts: int | None = None,
    alpha: float = DEFAULT_ALPHA,
    budget: int = DEFAULT_BUDGET,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[Verdict, list[ReadItem]]:
    """Open-weight mode: `read`, then `judge` under the key's cohorts and the control."""
    config = WatermarkConfig.from_params(key.params)
    reading = read(
        model,
        corpus,
        ours,
        config,
        cohorts=cohorts,
        budget=budget,
        batch_size=batch_size,
        on_batch=on_batch,
    )
    verdict = judge(key, reading.windows, mode="reading", cohorts=cohorts, alpha=alpha)
    return verdict, reading.items


def _in_turn(answers: list[Answer]) -> list[Answer]:
    """One answer of each cohort in turn (the i-th answers of every cohort, then the
    (i+1)-th...), so that a budget cut leaves every cohort read."""
    seen: dict[int | None, int] = {}
    ranked = []
    for answer in answers:
        rank = seen[answer.cohort] = seen.get(answer.cohort, -1) + 1
        ranked.append((rank, answer.cohort or 0, answer))
    return [answer for *_, answer in sorted(ranked, key=lambda r: r[:2])]


def accounts_of(verdict: Verdict, corpus: Corpus) -> dict[int, list[str]]:
    """The accounts, among the corpus's, in each cohort the verdict names."""
    named = {t.label for t in verdict.named()}
    found: dict[int, set[str]] = {c: set() for c in named if isinstance(c, int)}
    for answer in corpus.answers:
        if answer.cohort in found and answer.account_id:
            found[answer.cohort].add(answer.account_id)
    return {c: sorted(a) for c, a in found.items()}


def api_test(
    key: WatermarkKey,
    client: Any,
    model: str,
    prompts: list,
    ours: TransformersEngine,
    *,
    cohorts: int | None = None,
    alpha: float = DEFAULT_ALPHA,
    max_tokens: int = 256,
    frequent: tuple[Corpus, int] | None = None,
    on_answer: Callable[[int], None] | None = None,
) -> Verdict:
    """API mode: the suspect answers `prompts`; its answers are tested under our key(s).
    `frequent` (our corpus, M): score only contexts seen at least M times in it."""
    from distillguard.suspect.api import answer_windows, ask, frequent_contexts

    config = WatermarkConfig.from_params(key.params)
    texts = ask(client, model, prompts, max_tokens=max_tokens, on_answer=on_answer)
    answers = [ours.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    contexts = None
    if frequent is not None:
        corpus, at_least = frequent
        ours_ids = [_answer_ids(a, ours) for a in corpus.answers]
        contexts = frequent_contexts(ours_ids, config.context_width, at_least)
    windows = answer_windows(
        answers,
        [ours.chat_ids(p) for p in prompts],
        width=config.context_width,
        vocab_size=config.vocab_size,
        contexts=contexts,
    )
    if len(windows) == 0:
        raise DistillguardError("no window to score: the suspect's answers are too short")
    return judge(key, windows, mode="api", cohorts=cohorts, alpha=alpha)


def _answer_ids(answer: Answer, ours: TransformersEngine) -> list[int]:
    """An answer's token ids: as generated when the corpus has them (re-tokenising text
    may differ), else our tokenizer's."""
    return (
        answer.token_ids or ours.tokenizer(answer.response, add_special_tokens=False)["input_ids"]
    )
