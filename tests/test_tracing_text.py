"""Prompt-level signals: reasoning requests (tested on phrasings it was not written from),
capability areas, MinHash near-duplicates."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from distillguard.tracing import minhash
from distillguard.tracing.areas import area_of
from distillguard.tracing.cot import asks_for_reasoning

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "prompts"


def _corpus(name: str) -> list[dict]:
    lines = (SHARED / f"{name}.jsonl").read_text(encoding="utf-8").split("\n")
    return [json.loads(line) for line in lines if line.strip()]


def test_reasoning_requests_of_the_shared_seed_list_are_recognised():
    """The seed list is the detector's test set, in every language it holds."""
    seeds = _corpus("cot_elicitation")
    missed = [s["turns"][0] for s in seeds if not asks_for_reasoning(s["turns"][0])]
    assert len(seeds) == 60
    assert len(missed) <= 3, missed  # >= 95 % recall
    languages = {s["language"] for s in seeds if s["language"] != "en"}
    assert len(languages) >= 9
    for seed in seeds:
        if seed["language"] != "en":
            assert asks_for_reasoning(seed["turns"][0]), seed["turns"][0]


@pytest.mark.parametrize(
    "prompt",
    [
        "Could you talk me through your thought process on this one?",
        "Explain the logic you used, bit by bit, before the final number.",
        "I want the rationale behind each move, not just the result.",
        "Mostra il tuo ragionamento completo prima della risposta.",  # Italian
        "Leg je redenering stap voor stap uit.",  # Dutch
        "Adım adım düşünerek çöz ve her adımı yaz.",  # Turkish
        "请把解题思路写清楚。",  # Chinese
        '{"problem": "...", "format": {"thoughts": [], "answer": ""}}',
    ],
)
def test_reasoning_requests_it_was_not_written_from(prompt):
    assert asks_for_reasoning(prompt)


def test_ordinary_prompts_rarely_look_like_reasoning_requests():
    rng = random.Random(0)
    pool = [
        r["turns"][0]
        for name in ("gsm8k", "codealpaca", "instructionwild", "belle_zh", "mgsm", "self_instruct")
        for r in rng.sample(_corpus(name), 300)
    ]
    hits = sum(asks_for_reasoning(p) for p in pool)
    assert hits / len(pool) <= 0.03, hits


def test_capability_areas():
    assert area_of("Write a Python function that reverses a linked list.") == "code"
    assert area_of("Janet has 3 apples and buys 5 more. How many apples does she have?") == "math"
    assert area_of("Translate 'good morning' into French.") == "translation"
    assert area_of("You are an autonomous agent. Use the available tools to book a flight.") == (
        "tool_use"
    )
    assert area_of("hey, how was your weekend?") == "chat"
    # Words that name a capability in ordinary writing briefs do not make them that capability.
    assert (
        area_of(
            'Write a 700-word SEO blog article about "remote work: tools you need". Use H2 '
            "subheadings, include a FAQ section, and end with a call to action."
        )
        == "writing"
    )
    assert area_of("Write a lesson plan for a 9th-grade class on the water cycle.") == "writing"
    assert area_of("Write a product description (400-500 words) for a chef's knife.") == "writing"
    assert area_of("Write a class that parses dates and a test for it.") == "code"
    assert area_of("class Parser:\n    pass\nWhy does this fail?") == "code"
    assert area_of("What is 12 - 5 and 3*4?") == "math"


def test_minhash_sees_templates_and_near_duplicates_not_strangers():
    template = "Classify the sentiment of this review as positive or negative. Review: {}"
    texts = [
        template.format("The battery died after two days and support never answered."),
        template.format("The battery died after 3 days and support never answered!"),
        "Write a haiku about autumn leaves falling on a quiet pond.",
        "",
    ]
    sig = minhash.signatures(texts)
    assert sig.shape == (4, minhash.NUM_BINS)
    assert minhash.similarity(sig[0], sig[1]) >= 0.7
    assert minhash.similarity(sig[0], sig[2]) <= 0.2
    assert (sig[3] == minhash.EMPTY).all()
    # Deterministic: the same text, the same signature, alone or in a batch.
    assert np.array_equal(minhash.signatures([texts[2]])[0], sig[2])

    index = minhash.LshIndex()
    keys = minhash.band_keys(sig).tolist()
    assert not index.add(keys[0])
    assert index.add(keys[1])  # the near-duplicate shares a band
    assert not index.add(keys[2])
