"""Per-account behaviour, accumulated one event at a time.

`Profile` is the online state of one actor (an account, or a whole cluster of
accounts judged as one): constant work per event, so the same code serves the
gateway's live updates and a batch replay of the event log. What each request
says about itself (reasoning asked for? which capability? near-duplicate of an
earlier prompt?) is worked out once per event by `describe`, a batch at a time.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from distillguard.tracing import areas, cot, minhash
from distillguard.tracing.areas import AREAS
from distillguard.tracing.patterns import Lexicons
from distillguard.tracing.records import TraceEvent
from distillguard.tracing.shared import SharedTemplates

# A long answer: reasoning traces and full solutions, what a student learns most from.
# (When only the answer text is known, ~4 characters make a token.)
LONG_ANSWER_TOKENS = 700
FILLINGS = 3
# Per-actor memory is bounded: past these many distinct prompts (an aggregator after weeks
# online), new ones are no longer remembered and the re-send, template and near-duplicate
# rates are computed against what was.
MAX_REMEMBERED = 50_000
TEMPLATE_SHARE = 0.1
SKELETON_BYTES = 40  # the opening (or closing) words a template repeats
HOUR = 3600.0
AREA_INDEX = {area: i for i, area in enumerate(AREAS)}
# What distillation campaigns have been reported to target: reasoning, coding, maths and
# agentic tool use (the expensive capabilities), rather than prose, chat or translation.
VALUABLE_AREAS = ("tool_use", "code", "math", "reasoning")
VALUABLE_INDEX = frozenset(AREA_INDEX[a] for a in VALUABLE_AREAS)
DAY = 86_400.0
# A probe asks for at most this many answer tokens of a text that continues the actor's
# previous prompt: scoring a text token by token, where the harvest is the log-probabilities
# (a student trained on the teacher's whole next-token distribution), not the answer.
PROBE_TOKENS = 2
# With the log-probabilities asked for, a few tokens are a probe too: each one's distribution
# is the harvest.
SCORED_PROBE_TOKENS = 16
# A prompt sent to have its own tokens scored (`prompt_logprobs`, `echo`) is a whole text
# teacher-forced in one request once it is this long (~128 tokens: a worked answer, where a
# multiple-choice item scored choice by choice is a question and a few words).
SCORED_TEXT_CHARS = 512
CONTINUED_CHARS = 32  # the previous prompt's end, found again near the end of this one
CONTINUED_WITHIN = 256
PROBED_TEXTS = 32  # texts in flight at once: scoring several in turn is still probing


@dataclass
class Described:
    """What each request of a batch says about itself, independent of who sent it.

    Columns, one row per event: `cot` (asks for reasoning), `area` (index into
    AREAS), `bands` (MinHash LSH band keys), `head`/`tail` (hashes of the
    normalised opening and closing, which templates repeat), `exact` (hash
    of the whole normalised prompt) and, only when shared templates were given,
    `shared` (fills a template another provider shared; None otherwise).
    """

    cot: np.ndarray
    area: np.ndarray
    bands: np.ndarray
    head: np.ndarray
    tail: np.ndarray
    exact: np.ndarray
    shared: np.ndarray | None = None

    def rows(self) -> Iterator[Row]:
        """Plain Python values per event: the per-event loop reads them fastest."""
        return zip(
            self.cot.tolist(),
            self.area.tolist(),
            self.bands.tolist(),
            self.head.tolist(),
            self.tail.tolist(),
            self.exact.tolist(),
            [False] * len(self.cot) if self.shared is None else self.shared.tolist(),
            strict=True,
        )

    def take(self, index: np.ndarray) -> Described:
        return Described(
            *(None if (c := getattr(self, f.name)) is None else c[index] for f in fields(self))
        )


# (asks for reasoning, area, band keys, head, tail, exact, fills a shared template)
Row = tuple[bool, int, list[int], int, int, int, bool]


# The prompt lexicons run together: one RE2 pass per prompt answers both.
_LEXICONS = Lexicons((cot.PATTERNS, cot.decide), (areas.PATTERNS, areas.decide))


@functools.lru_cache(maxsize=16_384)
def _verdicts(window: bytes) -> tuple[bool, str]:
    """(asks for reasoning, capability area) of a prompt's lower-cased window; cached:
    follow-ups, re-runs and popular prompts arrive many times over."""
    return _LEXICONS.classify(window)


def describe(events: Sequence[TraceEvent], shared: SharedTemplates | None = None) -> Described:
    """Describe a batch; with `shared` (templates other providers shared, non-empty),
    also whether each prompt fills one of them."""
    texts = [e.text for e in events]
    # Identical prompts in a batch (re-sends, retries, a popular question) are described
    # once; `index` maps every event to its prompt's row.
    rows: dict[str, int] = {}
    index = np.fromiter((rows.setdefault(t, len(rows)) for t in texts), np.int64, len(texts))
    unique = list(rows)
    n = len(unique)
    # Encoded once, read three ways: by the lexicons (the window), by MinHash (the
    # opening) and for template skeletons (opening and closing).
    windows = [cot.window(t).lower().encode() for t in unique]
    verdicts = [_verdicts(w) for w in windows]
    openings = minhash.Texts.of([w[: minhash.MAX_BYTES] for w in windows])
    closings = minhash.Texts.of([w[-2 * SKELETON_BYTES :] for w in windows])
    # A template is a fixed part *and* a filling: a prompt shorter than two skeletons
    # is just a prompt.
    head = openings.edge_hash(SKELETON_BYTES)
    head[openings.lengths < 2 * SKELETON_BYTES] = 0
    tail = closings.edge_hash(SKELETON_BYTES, closing=True)
    tail[closings.lengths < 2 * SKELETON_BYTES] = 0
    described = Described(
        cot=np.fromiter((v[0] for v in verdicts), dtype=bool, count=n),
        area=np.fromiter((AREA_INDEX[v[1]] for v in verdicts), dtype=np.int8, count=n),
        bands=minhash.band_keys(minhash.signatures_of(openings)),
        head=head,
        tail=tail,
        # Exact re-sends compare the raw text; one too short ("thanks!") is no re-send.
        exact=np.fromiter(
            ((hash(t) or 1) if len(t) >= SKELETON_BYTES else 0 for t in unique), np.int64, n
        ),
        # Keyed signatures of the same openings, one per seed, only when there is a set.
        shared=shared.matches(openings) if shared else None,
    )
    return described.take(index)


@dataclass
class Releases:
    """When each model first appeared in the traffic. One first seen at least a day after
    the traffic began is a release: distillers move to a new model within hours of it,
    to copy its new capability before anyone can stop them."""

    start: float | None = None
    first_seen: dict[str, float] = field(default_factory=dict)

    def see(self, event: TraceEvent) -> None:
        if self.start is None:
            self.start = event.ts
        if event.model and event.model not in self.first_seen:
            self.first_seen[event.model] = event.ts

    def released_at(self, model: str) -> float | None:
        seen = self.first_seen.get(model)
        if seen is None or self.start is None or seen - self.start < DAY:
            return None
        return seen


@dataclass(slots=True)
class Profile:
    """Running totals of one actor's traffic; `features()` reads them as rates."""

    requests: int = 0
    first_ts: float = math.inf
    last_ts: float = -math.inf
    cot: int = 0
    multi_turn: int = 0
    long_answers: int = 0
    short_answers: int = 0  # max_tokens <= 64 (probes aside): labels, extraction, routing
    probes: int = 0  # one-token answers to a text that continues the previous prompt
    logit_requests: int = 0  # asked for the model's log-probabilities
    scored_texts: int = 0  # asked for a long prompt's own log-probabilities
    near_duplicates: int = 0
    templated: int = 0
    repeats: int = 0  # exact re-sends of an earlier prompt
    warm_repeats: int = 0  # ... sampled again at the same temperature above 0: best-of-n
    swept_repeats: int = 0  # ... at another temperature than before: a temperature sweep
    extractive: int = 0  # reasoning asked for, or a template filled, and a long answer given
    shared: int = 0  # prompts that fill a template another provider shared (templated at once)
    standalone: int = 0  # requests compared for templates (not follow-ups, not tiny)
    gaps: int = 0
    gap_log_sum: float = 0.0
    gap_log_sq: float = 0.0
    areas: list[int] = field(default_factory=lambda: [0] * len(AREAS))
    hours: list[int] = field(default_factory=lambda: [0] * 24)
    days: set[int] = field(default_factory=set)
    models: dict[str, int] = field(default_factory=dict)
    # model -> (first use, requests before it): how fast and how far this actor moved to it
    model_first: dict[str, tuple[float, int]] = field(default_factory=dict)
    ips: set[str] = field(default_factory=set)
    agents: set[str] = field(default_factory=set)
    # distinct prompt -> the temperature it was last sent at (None: the provider's default)
    _exact: dict[int, float | None] = field(default_factory=dict)
    answer_tokens: int = 0
    answers_counted: int = 0
    prompt_tokens: int = 0  # over the requests whose answer length is known: token ratio
    # Tokens of what was asked this time (the last user message, ~4 UTF-8 bytes a token,
    # history and system prompt left out), over the same requests: how much an answer adds
    # to its question. Translation, summaries, grading and RAG give back about what they
    # were given; a trace or a solution is many times its question.
    asked_tokens: int = 0
    valuable: int = 0  # prompts in the capabilities distillers pay for (VALUABLE_AREAS)
    max_tokens_sum: int = 0
    max_tokens_set: int = 0
    # skeleton (opening or closing) -> how many distinct prompts came with it: a template
    # is one skeleton with different fillings, not one prompt sent again.
    _skeletons: dict[int, int] = field(default_factory=dict)
    _lsh: minhash.LshIndex = field(default_factory=minhash.LshIndex)
    # The ends of the last few prompts that asked for a probe's few tokens, newest last.
    _probe_ends: list[str] = field(default_factory=list)

    def add(self, event: TraceEvent, row: Row) -> None:
        cot, area, bands, head, tail, exact, shared = row
        ts = event.ts
        self.requests += 1
        if ts > self.last_ts:
            if self.requests > 1:
                gap = math.log10(max(ts - self.last_ts, 0.01))
                self.gaps += 1
                self.gap_log_sum += gap
                self.gap_log_sq += gap * gap
            self.last_ts = ts
        if ts < self.first_ts:
            self.first_ts = ts
        self.cot += cot
        self.multi_turn += event.user_turns > 1 or event.conversation_id is not None
        given = event.completion_tokens
        if given is None and event.response_chars:
            given = event.response_chars // 4
        long = False
        asked = len(event.text.encode()) // 4 + 1
        if given is not None:
            self.answer_tokens += given
            self.answers_counted += 1
            self.prompt_tokens += event.prompt_tokens or 0
            self.asked_tokens += asked
            long = given >= LONG_ANSWER_TOKENS
            self.long_answers += long
        self.logit_requests += event.logprobs
        scored = event.prompt_logprobs and len(event.text) >= SCORED_TEXT_CHARS
        self.scored_texts += scored
        cap = event.max_tokens
        if cap is None and event.logprobs:
            cap = given  # no cap set: what was taken
        probe = False
        if cap is not None and cap <= (SCORED_PROBE_TOKENS if event.logprobs else PROBE_TOKENS):
            probe = self._probe(event.text)
            self.probes += probe
        if event.max_tokens is not None:
            self.max_tokens_sum += event.max_tokens
            self.max_tokens_set += 1
            # A label is a short answer; a scored text's one token is not what it took.
            self.short_answers += event.max_tokens <= 64 and not (probe or scored)
        self.areas[area] += 1
        self.valuable += area in VALUABLE_INDEX
        hour = int(ts // HOUR)
        self.hours[hour % 24] += 1
        self.days.add(hour // 24)
        model = event.model
        if model:
            count = self.models.get(model)
            if count is None:
                self.model_first[model] = (ts, self.requests - 1)
                count = 0
            self.models[model] = count + 1
        ip = event.ip
        if ip and ip not in self.ips and len(self.ips) < 64:
            self.ips.add(ip)
        agent = event.user_agent
        if agent and agent not in self.agents and len(self.agents) < 16:
            self.agents.add(agent)
        templated = False
        # A follow-up ("thanks, shorter please") says nothing about templates or re-asks:
        # only what opens a conversation, or stands alone, is compared.
        # ... nor does a probe: a text grown by a word shares its opening, fills nothing.
        if exact and event.user_turns <= 1 and not probe:
            self.standalone += 1
            if exact in self._exact:
                # Inside one conversation the last user message stays the same while tools
                # answer (an agent's loop): a step, not a re-send.
                if event.conversation_id is None:
                    self.repeats += 1
                    temperature = event.temperature
                    # Temperature 0 asks for the same answer again (an evaluation re-run);
                    # a re-send at the same sampling temperature asks for another one
                    # (best-of-n); one at another temperature measures the model (a sweep).
                    if temperature != self._exact[exact]:
                        self.swept_repeats += 1
                        self._exact[exact] = temperature
                    elif temperature is None or temperature > 0:
                        self.warm_repeats += 1
            else:
                remember = len(self._exact) < MAX_REMEMBERED
                if remember:
                    self._exact[exact] = event.temperature
                self.near_duplicates += self._lsh.add(bands, remember)
                skeletons = self._skeletons
                for skeleton in (head, tail):
                    if skeleton:
                        fills = skeletons.get(skeleton)
                        if fills is not None:
                            templated = True  # the same skeleton, new text: a refill
                            skeletons[skeleton] = fills + 1
                        elif remember:
                            skeletons[skeleton] = 1
                if shared:
                    # Another provider saw this template filled: no need to wait for a refill.
                    self.shared += 1
                    templated = True
        self.templated += templated
        # The product a distiller buys: a reasoning trace or a templated solution, in full,
        # and more than a rewrite of what was sent (a long translation is not one).
        expands = given is not None and given >= 2 * asked
        self.extractive += (cot or templated) and long and expands

    def _probe(self, text: str) -> bool:
        """Does `text` continue one of the last PROBED_TEXTS few-token prompts (the same
        text, grown or slid by a few tokens)? A labelling job's next item, or the same
        context with another choice appended (a multiple-choice evaluation), does not."""
        if len(text) < 2 * CONTINUED_CHARS:
            return False
        end, recent, ends = text[-CONTINUED_CHARS:], text[-CONTINUED_WITHIN:], self._probe_ends
        continued = next((i for i, e in enumerate(ends) if e != end and e in recent), None)
        if continued is not None:
            del ends[continued]  # that text has moved on: only its new end is kept
        ends.append(end)
        if len(ends) > PROBED_TEXTS:
            del ends[0]
        return continued is not None

    def pivot(self, releases: Releases | None) -> tuple[float, float]:
        """(share, hours): the largest share of its later traffic this actor moved to a model
        it took up within a day of the model's release, and how many hours after."""
        best = (0.0, 0.0)
        if releases is None:
            return best
        for model, (first_use, before) in self.model_first.items():
            released = releases.released_at(model)
            if released is None or first_use - released > DAY:
                continue
            share = self.models[model] / max(self.requests - before, 1)
            if share > best[0]:
                best = (share, (first_use - released) / HOUR)
        return best

    def features(self, releases: Releases | None = None) -> dict[str, float]:
        """Rates in [0, 1] (and a few counts) that scoring and evidence read."""
        n = max(self.requests, 1)
        active_hours = sum(1 for h in self.hours if h)
        spread = _entropy(self.hours) / math.log(24)
        gap_sd = 0.0
        if self.gaps > 1:
            mean = self.gap_log_sum / self.gaps
            gap_sd = math.sqrt(max(self.gap_log_sq / self.gaps - mean * mean, 0.0))
        pivot_share, pivot_hours = self.pivot(releases)
        return {
            "requests": float(self.requests),
            "pivot_share": pivot_share,
            "pivot_hours": pivot_hours,
            "active_days": float(len(self.days)),
            "requests_per_day": self.requests / max(len(self.days), 1),
            "mean_answer_tokens": self.answer_tokens / max(self.answers_counted, 1),
            "answer_to_prompt": self.answer_tokens / max(self.prompt_tokens, 1),
            "mean_max_tokens": self.max_tokens_sum / max(self.max_tokens_set, 1),
            "cot_rate": self.cot / n,
            "multi_turn_rate": self.multi_turn / n,
            "long_answer_rate": self.long_answers / n,
            "short_answer_rate": self.short_answers / n,
            "probe_rate": self.probes / n,
            "logprob_rate": self.logit_requests / n,
            "scored_text_rate": self.scored_texts / n,
            "near_duplicate_rate": self.near_duplicates / n,
            "template_rate": self.templated / n,
            "shared_template_rate": self.shared / n,
            "extractive_rate": self.extractive / n,
            "repeat_rate": self.repeats / n,
            "warm_repeat_rate": self.warm_repeats / n,
            "cold_repeat_rate": (self.repeats - self.warm_repeats - self.swept_repeats) / n,
            "swept_repeat_rate": self.swept_repeats / n,
            "expansion": self.answer_tokens / max(self.asked_tokens, 1),
            "valuable_rate": self.valuable / n,
            "distinct_rate": len(self._exact) / n,
            "distinct_prompts": float(len(self._exact)),
            # What a student gets: one trace per distinct prompt, and one per sampled re-send.
            "traces": float(len(self._exact) + self.warm_repeats),
            "area_coverage": _entropy(self.areas) / math.log(len(AREAS)),
            "top_area_share": max(self.areas) / n,
            "hour_spread": spread,
            "active_hours": float(active_hours),
            "gap_log_sd": gap_sd,  # spread of log10 inter-arrival times: people are bursty
        }

    def templates(self) -> list[int]:
        """Skeletons this actor runs: filled with FILLINGS different texts, and making up
        at least TEMPLATE_SHARE of its distinct prompts (an opening people share by chance
        is not)."""
        most = max(FILLINGS, TEMPLATE_SHARE * len(self._exact))
        return [k for k, fills in self._skeletons.items() if fills >= most]


def _entropy(counts: Sequence[int]) -> float:
    total = sum(counts)
    if not total:
        return 0.0
    return -sum(c / total * math.log(c / total) for c in counts if c)
