"""Suspect tests: the statistics (Holm, windows) on hand-made inputs, and reading mode on the
real bundled model, as a clean suspect and as one that learned our watermark."""

from __future__ import annotations

import numpy as np
import pytest

from distillguard.errors import DistillguardError
from distillguard.store import SuspectStore, open_engine
from distillguard.suspect.reading import ReadItem, reading_windows
from distillguard.suspect.verdict import holm, judge
from distillguard.watermark import WatermarkKey
from distillguard.watermark.windows import Windows


def write_prompts(path, n: int):
    """The first `n` prompts of the test sample, as a prompts JSONL."""
    import json

    from tests.conftest import PROMPT_SAMPLE

    lines = [line for line in PROMPT_SAMPLE.read_text().split("\n") if line.strip()][:n]
    path.write_text(
        "".join(json.dumps({"prompt": json.loads(x)["turns"][0]}) + "\n" for x in lines)
    )
    return path


def test_holm_matches_the_step_down_definition():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> monotone 0.06
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_reading_windows_score_first_contexts_only_and_skip_prompt_windows():
    prompt = [7, 8, 9]
    answer = [1, 2, 3, 1, 2, 4, 5]  # context (1, 2) comes back at position 5
    predicted = np.array([0, 0, 30, 31, 32, 33, 34])
    items = [ReadItem(prompt, answer)]
    got = reading_windows(items, [predicted], width=2, vocab_size=100)
    pairs = {(tuple(c), int(t)) for c, t in zip(got.contexts.tolist(), got.tokens, strict=True)}
    assert pairs == {((1, 2), 30), ((2, 3), 31), ((3, 1), 32), ((2, 4), 34)}
    assert int(got.total.sum()) == 5  # positions that had a full context
    # A prediction that repeats a prompt window (8, 9) -> 10 is not ours to score.
    items = [ReadItem([8, 9, 10], [8, 9, 5])]
    got = reading_windows(items, [np.array([0, 0, 10])], width=2, vocab_size=100)
    assert len(got) == 0


@pytest.mark.parametrize("vocab", [50, 2**40])  # packed exactly / hashed
def test_first_contexts_agree_with_a_plain_loop(vocab):
    from distillguard.watermark.windows import first_contexts

    rng = np.random.default_rng(3)
    contexts = rng.integers(0, 6, size=(5000, 2)) * (vocab // 6)  # many repeats
    segments = np.sort(rng.integers(0, 40, size=5000))
    seen, expected = set(), []
    for row, segment in zip(contexts.tolist(), segments.tolist(), strict=True):
        expected.append((segment, *row) not in seen)
        seen.add((segment, *row))
    assert first_contexts(contexts, segments).tolist() == expected


def test_reading_windows_per_group_deduplicate_within_each_group_only():
    same = ReadItem([7, 8], [1, 2, 3])  # one window: (1, 2) -> prediction 40
    items, predicted = [same, same, same], [np.array([0, 0, 40])] * 3
    got = reading_windows(items, predicted, width=2, vocab_size=100, groups=[5, 2, 5])
    split = got.by_segment()
    assert sorted(split) == [2, 5]  # group 5's two copies count once
    assert [len(split[g]) for g in (2, 5)] == [1, 1]
    assert split[5].total.tolist() == [2] and split[2].total.tolist() == [1]
    assert len(reading_windows(items, predicted, width=2, vocab_size=100)) == 1  # pooled


def test_reading_windows_on_many_threads_select_what_one_thread_does():
    rng = np.random.default_rng(5)
    items = [
        ReadItem(rng.integers(0, 30, 12), rng.integers(0, 30, int(rng.integers(3, 40))))
        for _ in range(300)
    ]
    predicted = [rng.integers(0, 30, len(i.answer_ids)) for i in items]
    groups = rng.integers(0, 9, 300)
    one, many = (
        reading_windows(items, predicted, width=2, vocab_size=30, groups=groups, workers=w)
        for w in (1, 3)
    )
    assert len(one) > 1000 and np.array_equal(one.segments, many.segments)
    assert np.array_equal(one.contexts, many.contexts) and np.array_equal(one.tokens, many.tokens)
    assert one.total.tolist() == many.total.tolist() and one.n_segments == many.n_segments == 9


def test_verdict_names_the_cohort_and_keeps_the_control_quiet():
    # A fixed key: with a fresh random one, another cohort is named in about 1 run in 100
    # (the Holm-corrected alpha of 0.01 at work; the null trials measure that rate).
    params = {"gamma": 0.25, "context_width": 1, "vocab_size": 1000}
    key = WatermarkKey(secret=b"verdict-test-key" * 2, key_id="verdict-test", params=params)
    cohort = 3
    from distillguard.watermark import Watermark

    wm = Watermark.from_key(key.derive(f"cohort-{cohort}"))
    rng = np.random.default_rng(0)
    contexts = rng.integers(0, 1000, size=(4000, 1))
    candidates = rng.integers(0, 1000, size=(4000, 8))
    # A suspect that picks a green candidate when it has one (it learned cohort 3's key).
    green = wm.scheme.token_scores(
        wm.hash.values(np.repeat(contexts, 8, axis=0), candidates.reshape(-1))
    ).reshape(4000, 8)
    tokens = candidates[np.arange(4000), np.argmax(green, axis=1)]
    windows = Windows(contexts, tokens, np.zeros(4000, np.int64), 1, np.array([4000]))
    verdict = judge(key, windows, mode="reading", cohorts=8)
    document = verdict.document()
    assert document["verdict"] == "trained on our outputs"
    assert document["named_cohorts"] == [cohort]
    assert document["control"]["significant"] is False and document["control"]["keys"] == 8
    assert document["p_value"] < 1e-10 and document["log10_p_value"] < -10


class _Learned:
    """The bundled model with our watermark's bias added to every next-token distribution:
    a suspect that learned one cohort's watermark perfectly (what a student trained on its
    answers approaches), built from real parts."""

    def __init__(self, model, watermark) -> None:
        self.model, self.watermark, self.config = model, watermark, model.config

    def __call__(self, input_ids, attention_mask):
        import torch

        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        logits = out.logits.float().numpy()
        rows, length, vocab = logits.shape
        width = self.watermark.config.context_width
        ids = input_ids.numpy()
        # The context of position p is the `width` tokens ending at p, oldest first.
        contexts = np.stack(
            [np.pad(ids, ((0, 0), (j, 0)))[:, :length] for j in range(width - 1, -1, -1)], -1
        )
        biased = self.watermark.apply(
            logits.reshape(rows * length, vocab), contexts.reshape(rows * length, width)
        )
        out.logits = torch.from_numpy(biased.reshape(rows, length, vocab))
        return out


@pytest.fixture(scope="module")
def cohort_corpus(engine, sample_prompts):
    """16 answers of the bundled model: the even ones marked with cohort 3's sub-key (the
    accounts of cohort 3), the odd ones with cohort 1's."""
    from distillguard.suspect.corpus import Answer, Corpus
    from distillguard.watermark import Watermark

    key = WatermarkKey(secret=bytes(range(7, 39)), key_id="wk_suspecttest01")
    prompts = sample_prompts[:16]
    answers = []
    for cohort, chosen in ((3, prompts[0::2]), (1, prompts[1::2])):
        wm = Watermark.from_key(key.derive(f"cohort-{cohort}"))
        done = engine.generate(chosen, max_new_tokens=96, watermark=wm, seed=5, batch_size=8)
        answers += [
            Answer(p, o.text, f"acct-{cohort}-{i}", cohort, o.completion_ids)
            for i, (p, o) in enumerate(zip(chosen, done, strict=True))
        ]
    return key, Corpus(answers)


def test_reading_mode_clears_a_clean_model_and_names_the_cohort_a_student_learned(
    engine, cohort_corpus
):
    from dataclasses import replace

    from distillguard.suspect.corpus import Corpus
    from distillguard.suspect.run import accounts_of, reading_test
    from distillguard.watermark import Watermark

    key, corpus = cohort_corpus
    clean, _ = reading_test(key, engine.model, corpus, engine, cohorts=8)
    assert clean.document()["verdict"] == "no evidence" and clean.named() == []
    assert clean.document()["p_value"] > 0.01
    # Every window tested is counted, whichever cohort (one with none, maybe) is the best.
    said = clean.document()
    assert said["scored"] == sum(c["scored"] for c in said["cohorts"]) > 0

    student = _Learned(engine.model, Watermark.from_key(key.derive("cohort-3")))
    learned, reading = reading_test(key, student, corpus, engine, cohorts=8)
    items = reading.items
    document = learned.document()
    assert document["verdict"] == "trained on our outputs", document
    assert document["named_cohorts"] == [3]
    assert document["control"]["significant"] is False
    assert accounts_of(learned, corpus) == {3: [f"acct-3-{i}" for i in range(8)]}
    assert len(items) == 16
    # Each cohort's key is tested on its own answers; cohorts that got none score nothing.
    assert document["windows"] == "per cohort"
    scored = {c["cohort"]: c["scored"] for c in document["cohorts"]}
    assert scored[3] > 0 and scored[1] > 0 and scored[0] == scored[7] == 0
    assert document["best"] == {"key": 3, "scored": scored[3]} and not reading.notes
    # Answers that say no cohort cannot be tested per cohort: pooled, and said so.
    mixed = Corpus([*corpus.answers, replace(corpus.answers[0], cohort=None)])
    pooled, reading = reading_test(key, student, mixed, engine, cohorts=8)
    assert pooled.document()["windows"] == "pooled"
    assert reading.notes and reading.notes[0].startswith("1 of 17 answers say no cohort")

    with pytest.raises(DistillguardError, match="cohort 3, but --cohorts is 2"):
        reading_test(key, student, corpus, engine, cohorts=2)


def test_a_reading_budget_is_spread_over_the_cohorts(engine, cohort_corpus):
    from distillguard.suspect.run import reading_test

    key, corpus = cohort_corpus
    first = next(a for a in corpus.answers if a.cohort == 1)  # cohort 1 is read first
    budget = len(first.token_ids) + 1  # reached by the second answer read
    _, reading = reading_test(key, engine.model, corpus, engine, cohorts=8, budget=budget)
    items = reading.items
    read = {tuple(i.answer_ids) for i in items}
    cohorts = {a.cohort for a in corpus.answers if tuple(a.token_ids) in read}
    assert len(items) == 2 and cohorts == {1, 3}  # one answer of each, not two of one


def test_suspect_cli_reads_our_answers_and_refuses_bad_input(tmp_path, cache_dir, sample_prompts):
    import json

    from transformers import LlamaConfig, LlamaForCausalLM

    from distillguard.engine.bundled import cached_model_dir
    from tests.helpers import assert_user_error, run

    key, prompts = tmp_path / "key.json", tmp_path / "prompts.jsonl"
    # A fixed key: a clean suspect comes out significant against 1 key in 100 at alpha 0.01.
    WatermarkKey(secret=bytes(range(40, 72)), key_id="wk_suspectclitest").save(key)
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in sample_prompts[:8]))
    made = run(
        "generate",
        "--prompts",
        str(prompts),
        "--key",
        str(key),
        "--json",
        "--max-tokens",
        "48",
        "--seed",
        "3",
    )
    assert made.returncode == 0, made.stderr
    corpus = tmp_path / "answers.jsonl"
    corpus.write_text(made.stdout)
    clean = cached_model_dir(cache_dir)  # the bundled model: it never read our answers
    out = tmp_path / "verdict.json"
    result = run(
        "suspect",
        "test",
        "--key",
        str(key),
        "--model",
        str(clean),
        "--corpus",
        str(corpus),
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    verdict = json.loads(out.read_text())
    assert verdict == json.loads(result.stdout)
    assert verdict["mode"] == "reading" and verdict["verdict"] == "no evidence"
    assert verdict["scored"] > 100 and verdict["control"]["keys"] == 1
    assert set(verdict) >= {"scored", "green_fraction", "p_value", "alpha", "control", "cohorts"}

    other = tmp_path / "other-vocabulary"
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=1000,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        )
    ).save_pretrained(other)
    args = ["suspect", "test", "--key", str(key), "--corpus", str(corpus)]
    assert_user_error(run(*args, "--model", str(other)), "vocabulary of 1000 tokens")
    assert_user_error(run(*args, "--model", str(tmp_path / "nowhere")), "no such file")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "response": "there"}\n{"nothing": 1}\n')
    assert_user_error(
        run("suspect", "test", "--key", str(key), "--model", str(clean), "--corpus", str(bad)),
        "bad.jsonl:2",
    )


def _vllm_marked(config: dict, n: int, length: int, seed: int) -> list[list[int]]:
    """Texts marked with vLLM's Gumbel-max over random logits (our copy of its PRF, held to
    vLLM's own package in test_vllm.py), on a 300-token vocabulary."""
    from distillguard.watermark.vllm_gumbel import philox_uniform

    rng = np.random.default_rng(seed)
    vocab = np.arange(300)
    width = config["context_width"]
    texts = []
    for _ in range(n):
        ids: list[int] = []
        for _ in range(length):
            context = np.array([([-1] * width + ids)[-width:]] * len(vocab))
            u = philox_uniform(config["key"], context, vocab).astype(np.float64)
            ids.append(int(np.argmax(rng.standard_normal(300) - np.log(-np.log(u)))))
        texts.append(ids)
    return texts


def test_a_verdict_under_vllms_own_watermark_keeps_its_control_quiet():
    from distillguard.suspect.verdict import judge_vllm
    from distillguard.watermark.vllm_gumbel import VllmWatermark

    config = {"key": 424242, "algorithm": "gumbel", "context_width": 2}
    mark = VllmWatermark.from_config(config)
    marked = judge_vllm(mark, _vllm_marked(config, 4, 40, seed=1), mode="api").document()
    assert marked["verdict"] == "trained on our outputs", marked
    assert not marked["control"]["significant"] and marked["control"]["keys"] == 16
    rng = np.random.default_rng(2)
    clean = judge_vllm(mark, [rng.integers(0, 300, 40).tolist() for _ in range(4)], mode="api")
    assert clean.document()["verdict"] == "no evidence"


def test_suspect_cli_under_vllms_watermark_asks_an_api_and_refuses_bad_choices(tmp_path, upstream):
    """End to end over a real API (the fake upstream: unmarked answers), then the choices
    vLLM's watermark cannot serve."""
    import json

    from tests.helpers import assert_user_error, run

    config = tmp_path / "vllm.json"
    config.write_text(json.dumps({"key": 99, "algorithm": "dual_key_gumbel", "alpha": 0.5}))
    prompts = write_prompts(tmp_path / "prompts.jsonl", 4)
    api = ["--api-url", upstream, "--api-model", "fake-model", "--prompts", str(prompts)]
    store = f"sqlite:///{tmp_path / 'store.db'}"
    result = run("suspect", "test", "--vllm-config", str(config), *api, "--save", "--store", store)
    assert result.returncode == 0, result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["scheme"] == "vllm-dual-key-gumbel" and verdict["verdict"] == "no evidence"
    assert verdict["answers"] == 4 and verdict["scored"] > 0
    [saved] = SuspectStore(open_engine(store)).recent()  # --save: kept for the console
    assert saved["suspect"] == f"{upstream} fake-model" and saved["verdict"] == verdict

    key = tmp_path / "key.json"
    WatermarkKey.generate().save(key)
    both = run("suspect", "test", "--vllm-config", str(config), "--key", str(key), *api)
    assert_user_error(both, "either --key KEY or --vllm-config FILE")
    cohorts = run("suspect", "test", "--vllm-config", str(config), *api, "--cohorts", "8")
    assert_user_error(cohorts, "one key per engine")
    reading = run(
        "suspect",
        "test",
        "--vllm-config",
        str(config),
        "--model",
        str(tmp_path),
        "--corpus",
        str(prompts),
    )
    assert_user_error(reading, "--vllm-config is for API mode")


def test_a_strong_dual_key_mark_has_a_finite_log_p_value():
    """alpha = 0.1: the null's shape is not an integer and scipy's tail underflows to 0 for
    a strong mark; the reported log10 p stays a finite, conservative number (JSON-safe)."""
    import json

    from distillguard.watermark.vllm_gumbel import VllmWatermark, derive_key

    config = {"key": 77, "algorithm": "dual_key_gumbel", "context_width": 2, "alpha": 0.1}
    marked = _vllm_marked({**config, "key": derive_key(77, b"key_a")}, 1, 1500, seed=3)
    found = VllmWatermark.from_config(config).detect_corpus(marked)
    assert found.p_value == 0.0 and -1e6 < found.log10_p_value < -308
    json.loads(json.dumps(found.to_dict(), allow_nan=False))
