"""A whole suspect test, as `distillguard suspect test` runs it: `validate` the choices,
then `run` them."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillguard.errors import DistillguardError, VocabularyMismatchError
from distillguard.suspect.corpus import Answer, Corpus, read_corpus
from distillguard.suspect.reading import ReadItem, predictions, reading_windows
from distillguard.suspect.verdict import DEFAULT_ALPHA, Verdict, judge
from distillguard.watermark.core import WatermarkConfig
from distillguard.watermark.keys import WatermarkKey
from distillguard.watermark.windows import Windows

if TYPE_CHECKING:
    from distillguard.engine.transformers_engine import TransformersEngine

DEFAULT_BUDGET = 50_000  # answer tokens read: ~4 min on 2 CPU cores for SmolLM2-135M


@dataclass(frozen=True)
class SuspectTest:
    """One suspect test's choices: open weights (`model`, our answers in `corpus`) or API
    (`api_url`, `api_model`, the `prompts` to ask; `corpus` only for `frequent`)."""

    key: Path | None = None
    vllm_config: Path | None = None  # instead of `key`: vLLM's own watermark (API mode)
    tokenizer: Path | None = None  # the marking model's tokenizer.json (vLLM's watermark)
    model: Path | None = None
    api_url: str | None = None
    api_model: str | None = None
    corpus: Path | None = None
    prompts: Path | None = None
    cohorts: int | None = None
    alpha: float = DEFAULT_ALPHA
    budget: int = DEFAULT_BUDGET
    batch_size: int = 8
    max_tokens: int = 256
    frequent: int | None = None

    @property
    def api(self) -> bool:
        return self.api_url is not None or self.api_model is not None


def validate(test: SuspectTest) -> None:
    """Refuse contradictory or incomplete choices before anything slow is loaded."""
    if (test.key is None) == (test.vllm_config is None):
        raise DistillguardError("give either --key KEY or --vllm-config FILE")
    if test.vllm_config is not None and (not test.api or test.cohorts or test.frequent):
        raise DistillguardError(
            "--vllm-config is for API mode, without --cohorts or --frequent "
            "(vLLM's own watermark has one key per engine)"
        )
    if test.tokenizer is not None and test.vllm_config is None:
        raise DistillguardError("--tokenizer is for --vllm-config (our keys use our model's)")
    if (test.model is not None) == test.api:
        raise DistillguardError("give either --model PATH or --api-url URL --api-model NAME")
    if test.api and (test.api_url is None or test.api_model is None or test.prompts is None):
        raise DistillguardError("API mode needs --api-url, --api-model and --prompts")
    if not test.api and test.corpus is None:
        raise DistillguardError("open-weight mode needs --corpus (our answers)")
    if test.frequent is not None and (not test.api or test.corpus is None or test.frequent < 1):
        raise DistillguardError("--frequent N (N >= 1) is for API mode, with --corpus")
    if not 0.0 < test.alpha < 1.0:
        raise DistillguardError("--alpha must be between 0 and 1")
    if min(test.budget, test.batch_size, test.max_tokens, test.cohorts or 1) < 1:
        raise DistillguardError(
            "--budget, --batch-size, --max-tokens and --cohorts must be positive"
        )


def run(
    test: SuspectTest,
    ours: Callable[[], TransformersEngine],
    track: Callable[[str, int], Callable[[int], None]],
) -> dict[str, Any]:
    """A validated test: its verdict's document, with how many answers it took and, for
    each cohort it names, the corpus's accounts in that cohort.

    The key and the inputs are read first, so that their errors come before `ours` loads
    our model (slow). `track(phase, total)` is called as the counted phase starts and
    returns the callback its progress is counted into."""
    if test.vllm_config is not None:
        return _vllm_api_run(test, track)
    assert test.key is not None
    key = WatermarkKey.load(test.key)
    answers = read_corpus(test.corpus) if test.corpus is not None else None
    if test.api:
        from distillguard.engine.prompts import read_prompts

        asked = read_prompts(test.prompts)
    engine = ours()
    if test.api:
        verdict = api_test(
            key,
            _client(test),
            test.api_model,
            asked,
            engine,
            cohorts=test.cohorts,
            alpha=test.alpha,
            max_tokens=test.max_tokens,
            frequent=(answers, test.frequent) if test.frequent is not None else None,
            on_answer=track("asking", len(asked)),
        )
        document = {**verdict.document(), "answers": len(asked)}
    else:
        suspect = load_suspect(test.model)
        verdict, reading = reading_test(
            key,
            suspect,
            answers,
            engine,
            cohorts=test.cohorts,
            alpha=test.alpha,
            budget=test.budget,
            batch_size=test.batch_size,
            on_batch=track("reading", len(answers.answers)),
        )
        document = {**verdict.document(), "answers_read": len(reading.items)}
        if reading.notes:
            document["notes"] = list(reading.notes)
    named = accounts_of(verdict, answers) if answers is not None else {}
    if named:
        document["accounts"] = {str(c): a for c, a in named.items()}
    return document


def _client(test: SuspectTest) -> Any:
    """The suspect's API; its key from $DISTILLGUARD_SUSPECT_API_KEY."""
    import openai

    return openai.OpenAI(
        base_url=test.api_url,
        api_key=os.environ.get("DISTILLGUARD_SUSPECT_API_KEY", "none"),
        max_retries=2,
    )


def _vllm_api_run(test: SuspectTest, track: Callable[[str, int], Callable[[int], None]]) -> dict:
    """API mode under vLLM's own watermark: the suspect's answers, in the marking model's
    tokens, tested under the engine's key beside derived control keys."""
    from distillguard.config import load_settings
    from distillguard.engine.bundled import text_tokenizer
    from distillguard.engine.prompts import read_prompts
    from distillguard.suspect.api import ask
    from distillguard.suspect.verdict import judge_vllm
    from distillguard.watermark.vllm_gumbel import VllmWatermark

    mark = VllmWatermark.load(test.vllm_config)
    tokenizer = text_tokenizer(load_settings().cache_dir, test.tokenizer)
    asked = read_prompts(test.prompts)
    texts = ask(
        _client(test),
        test.api_model,
        asked,
        max_tokens=test.max_tokens,
        on_answer=track("asking", len(asked)),
    )
    answers = [tokenizer.encode(t, add_special_tokens=False).ids for t in texts]
    if not any(answers):
        raise DistillguardError("no token to score: the suspect's answers are empty")
    verdict = judge_vllm(mark, answers, mode="api", alpha=test.alpha)
    return {**verdict.document(), "answers": len(asked), "scheme": mark.scheme}


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
    notes: tuple[str, ...] = ()  # what the reader should know about how it was read


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
    unlabelled = sum(a.cohort is None for a in corpus.answers)
    per_cohort = cohorts is not None and not unlabelled
    notes = ()
    if cohorts is not None and unlabelled:
        notes = (
            f"{unlabelled:,} of {len(corpus.answers):,} answers say no cohort: every cohort's "
            "key is tested on all the answers' windows (pooled), which dilutes one cohort's "
            "signal; a corpus that says each answer's cohort (`events export`) tests each "
            "cohort on its own answers",
        )
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
    return Reading(items, windows, notes)


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
) -> tuple[Verdict, Reading]:
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
    return verdict, reading


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
