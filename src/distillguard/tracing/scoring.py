"""From behaviour to a distillation score in [0, 1], with the evidence in plain words.

Distillation needs three things at once, and the score asks for all three:

* **scale** — a student needs tens of thousands of examples: hundreds of
  requests a week at least, from one actor (an account, or a linked cluster);
* **extraction** — the traffic is shaped to copy a capability: reasoning
  asked for *and* delivered at length, long answers with no conversation
  around them, or templated sweeps that want real answers (not one-word labels);
* **automation** — not a person at a keyboard: single-turn requests around the
  clock, or more requests a day than anyone can read.

Legitimate heavy users have scale and automation but not extraction (batch
jobs want short labels; evaluation harnesses re-ask the same benchmark items,
which a harvester never needs), or extraction without scale and pace (people
studying reasoning). Each component is a ramp between two round anchor
points; rates are shrunk toward zero for actors with few requests (a prior of
`PRIOR` neutral requests), so five odd requests prove nothing. The components
add up as log-odds, so each piece of evidence moves the score by a bounded,
explainable amount. docs/tracing.md justifies every anchor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FLAG_AT = 0.5  # the default flag threshold (`tracing.throttle_at`)
PRIOR = 10.0  # pseudo-requests of neutral behaviour added to every rate

# Log-odds weights of the components.
BIAS = -6.0
W_SCALE = 3.0
W_EXTRACTION = 3.0
W_AUTOMATION = 2.0
W_BOTH = 3.0  # extraction and automation together: the harvester's signature
W_BENIGN = 5.0
W_PIVOT = 1.0  # moved to a new model within a day of its release


def ramp(value: float, low: float, high: float) -> float:
    """0 at or below `low`, 1 at or above `high`, linear between."""
    if value <= low:
        return 0.0
    if value >= high:
        return 1.0
    return (value - low) / (high - low)


@dataclass(frozen=True)
class Assessment:
    score: float
    components: dict[str, float]


def assess(f: dict[str, float]) -> Assessment:
    """Score one actor's features (Profile.features())."""
    n = f["requests"]
    shrink = n / (n + PRIOR)
    # A student learns from distinct examples: distinct prompts, plus re-sends sampled anew.
    scale = ramp(math.log10(max(f["traces"], 1.0)), 2.5, 3.5)  # 316 -> 0, 3,162 -> 1
    pace = ramp(math.log10(max(f["requests_per_day"], 1.0)), 1.7, 2.5)  # 50/day -> 0, 316 -> 1
    single_turn = _single_turn(f, shrink)
    around_clock = ramp(f["hour_spread"], 0.8, 0.95)
    automation = max((single_turn + around_clock) / 2, pace)
    extraction = _extraction(f, shrink)

    # Re-running a *bounded* set at temperature 0 (a benchmark: hundreds to a few thousand
    # items, the same answer wanted again) is how evaluation harnesses look.
    bounded = 1.0 - ramp(math.log10(max(f["distinct_prompts"], 1.0)), 3.0, 3.7)
    reruns = ramp(f["cold_repeat_rate"] * shrink, 0.15, 0.5) * bounded
    # ... and the same items sent again at other temperatures is an experiment on the model
    # (a temperature sweep); a harvester keeping the best of n samples keeps one temperature.
    sweeps = ramp(f["swept_repeat_rate"] * shrink, 0.1, 0.3) * bounded
    labels_only = ramp(f["short_answer_rate"] * shrink, 0.3, 0.8)
    benign = max(reruns, sweeps, labels_only)
    pivot = ramp(f["pivot_share"], 0.3, 0.7)
    z = (
        W_PIVOT * pivot
        + BIAS
        + W_SCALE * scale
        + W_EXTRACTION * extraction
        + W_AUTOMATION * automation
        + W_BOTH * extraction * automation
        - W_BENIGN * benign
    )
    components = {
        "scale": scale,
        "extraction": extraction,
        "automation": automation,
        "benign": benign,
        "pivot": pivot,
    }
    return Assessment(1.0 / (1.0 + math.exp(-z)), components)


def kind(f: dict[str, float]) -> float:
    """The extraction of an actor's traffic with its rates not shrunk: what *kind* of traffic
    this is, however little of it there is (a hydra member's ten requests)."""
    return _extraction(f, 1.0)


def _single_turn(f: dict[str, float], shrink: float) -> float:
    return ramp(1.0 - f["multi_turn_rate"] * shrink - (1 - shrink), 0.6, 0.95)


def _extraction(f: dict[str, float], shrink: float) -> float:
    """How much of the traffic is shaped to copy a capability, in [0, 1]. `shrink` < 1
    pulls the rates toward zero for actors with few requests; with 1 it says what *kind*
    of traffic this is however little of it there is (a hydra member's ten requests)."""

    def rate(name: str) -> float:
        return f[name] * shrink

    depth = ramp(f["mean_answer_tokens"], 200, 800)
    # What a student learns is what the answer adds to its question: a reasoning trace or a
    # solution is many times its prompt; a translation, a grade, a summary or a RAG answer
    # gives back about what it was given.
    gain = ramp(f["expansion"], 1.0, 3.0)
    # ... and in a capability worth copying: reasoning, code, maths, tool use (asked for
    # reasoning in any area counts), not product copy, chat or translation.
    value = ramp(f["valuable_rate"] + f["cot_rate"], 0.2, 0.5)
    reasoning = ramp(rate("cot_rate"), 0.1, 0.5) * depth
    long_alone = ramp(rate("long_answer_rate"), 0.2, 0.6) * _single_turn(f, shrink)
    # A template filled again and again is strong evidence by itself: answers of a few
    # hundred tokens (a solution, not a label) are enough (pipelines that give back what
    # they were given, or write product copy, are held by gain and value).
    sweep = ramp(rate("template_rate"), 0.2, 0.6) * ramp(f["mean_answer_tokens"], 100, 400)
    # The same prompt sampled again and again with long answers: best-of-n harvesting.
    best_of_n = ramp(rate("warm_repeat_rate"), 0.15, 0.5) * depth
    shapes = 1.0 - (1.0 - reasoning) * (1.0 - long_alone) * (1.0 - sweep) * (1.0 - best_of_n)
    # A share of the traffic that is pure product (a reseller's key hides one among users).
    delivered = ramp(rate("extractive_rate"), 0.05, 0.25)
    # A text scored one token at a time copies the model's distribution over whatever the
    # text is about: value and gain (of a one-token answer) do not apply.
    probing = ramp(rate("probe_rate"), 0.2, 0.6)
    # ... and so does a whole text sent to have its own tokens scored (`prompt_logprobs`,
    # `echo`): the same harvest in one request, over a text worth copying.
    scoring = ramp(rate("scored_text_rate"), 0.2, 0.6) * value
    return max(value * max(shapes * gain, delivered), probing, scoring)


def evidence(f: dict[str, float]) -> list[str]:
    """What a reviewer can check; only what is notable is said."""
    n = int(f["requests"])
    said: list[str] = [
        f"{n:,} requests over {int(f['active_days'])} active days "
        f"({f['requests_per_day']:,.0f} a day)"
    ]
    if f["cot_rate"] >= 0.1:
        said.append(f"{f['cot_rate']:.0%} of prompts ask for written-out reasoning")
    if f["long_answer_rate"] >= 0.2:
        said.append(
            f"{f['long_answer_rate']:.0%} of answers are long (700+ tokens); "
            f"{f['answer_to_prompt']:.1f} answer tokens per prompt token"
        )
    if f["mean_max_tokens"] >= 2000:
        said.append(f"asks for up to {f['mean_max_tokens']:,.0f} tokens per answer on average")
    if f["extractive_rate"] >= 0.05:
        said.append(
            f"{f['extractive_rate']:.0%} of requests took away a full reasoning trace or "
            "templated solution"
        )
    if f["template_rate"] >= 0.2:
        said.append(f"{f['template_rate']:.0%} of prompts fill a repeated template")
    # A template is filled more than once: one match in a short trace says little.
    if f["shared_template_rate"] >= 0.05 and f["shared_template_rate"] * n >= 1.5:
        said.append(
            f"{f['shared_template_rate']:.0%} of prompts match templates other providers shared"
        )
    if f["near_duplicate_rate"] >= 0.2:
        said.append(f"{f['near_duplicate_rate']:.0%} of prompts are near-duplicates")
    if f["multi_turn_rate"] <= 0.1 and n >= 20:
        said.append(f"{1 - f['multi_turn_rate']:.0%} single-turn requests (no conversation)")
    if f["hour_spread"] >= 0.8 and n >= 50:
        said.append(f"active in {int(f['active_hours'])} of 24 hours of the day")
    if f["area_coverage"] >= 0.6:
        said.append("prompts spread evenly over capability areas")
    elif f["top_area_share"] >= 0.8 and n >= 100:
        said.append(f"{f['top_area_share']:.0%} of prompts in one capability area")
    if f["pivot_share"] >= 0.3:
        said.append(
            f"moved {f['pivot_share']:.0%} of its traffic to a new model "
            f"{f['pivot_hours']:.0f} h after its release"
        )
    if f["cold_repeat_rate"] >= 0.15:
        said.append(
            f"{f['cold_repeat_rate']:.0%} of prompts are re-sent at temperature 0 "
            "(the same answer again: evaluation re-runs?)"
        )
    if f["swept_repeat_rate"] >= 0.1:
        said.append(
            f"{f['swept_repeat_rate']:.0%} of prompts are re-sent at another temperature "
            "(a temperature sweep: an experiment?)"
        )
    if f["warm_repeat_rate"] >= 0.15:
        said.append(
            f"{f['warm_repeat_rate']:.0%} of prompts are re-sent to be sampled again "
            "(another answer each time: best-of-n?)"
        )
    if f["expansion"] < 1.0 and f["mean_answer_tokens"] >= 100:
        said.append(
            f"answers are {f['expansion']:.1f}x the size of what was asked "
            "(transforming given text, not new content)"
        )
    if f["probe_rate"] >= 0.2:
        said.append(
            f"{f['probe_rate']:.0%} of requests ask for a token or a few of a text that "
            "continues an earlier prompt (scoring a text token by token: the harvest is the "
            "log-probabilities)"
        )
    if f["scored_text_rate"] >= 0.2:
        said.append(
            f"{f['scored_text_rate']:.0%} of requests send a whole text to have its own tokens "
            "scored (the prompt's log-probabilities: a next-token distribution to train on)"
        )
    if f["logprob_rate"] >= 0.2:
        said.append(f"{f['logprob_rate']:.0%} of requests ask for the model's log-probabilities")
    if f["short_answer_rate"] >= 0.3:
        said.append(f"{f['short_answer_rate']:.0%} of requests cap answers at 64 tokens or fewer")
    return said
