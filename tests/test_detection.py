"""Detection: exact p-values, de-duplication, prompt exclusion, batch APIs, bad input."""

import math

import numpy as np
import pytest
from scipy import stats

from distillguard.errors import InputTooShortError, VocabularyMismatchError
from distillguard.watermark import Watermark, WatermarkKey
from distillguard.watermark import windows as win
from distillguard.watermark.schemes import null_tests
from tests.helpers import assert_user_error, run

VOCAB = 49152


def toy_generate(watermark, n_tokens, rng, prefix=(1,), temperature=1.5):
    """Sample from random logits through the framework-free `apply` (no model needed)."""
    ids = list(prefix)
    for _ in range(n_tokens):
        logits = rng.standard_normal((1, VOCAB)) * 3.0 / temperature
        if watermark is not None:
            logits = watermark.apply(logits, np.array([ids]))
        p = np.exp(logits - logits.max())
        p /= p.sum()
        ids.append(int(rng.choice(VOCAB, p=p[0])))
    return np.array(ids[len(prefix) :])


@pytest.mark.parametrize("scheme", ["kgw", "gumbel"])
def test_watermarked_sequence_is_detected_and_clean_is_not(key, scheme):
    rng = np.random.default_rng(1)
    watermark = Watermark(key, scheme=scheme)
    marked = toy_generate(watermark, 150, rng)
    clean = toy_generate(None, 150, rng)
    assert watermark.detect(marked).p_value < 1e-8
    assert watermark.detect(clean).p_value > 1e-3
    # Another key does not see the watermark.
    other = WatermarkKey(secret=bytes(range(200, 232)), key_id="wk_fixedtestkey02")
    assert Watermark(other, scheme=scheme).detect(marked).p_value > 1e-3


def test_kgw_p_value_is_the_exact_binomial_tail(key):
    watermark = Watermark(key, gamma=0.25)
    ids = np.random.default_rng(2).integers(0, VOCAB, 60)
    result = watermark.detect(ids)
    exact = sum(
        stats.binom.pmf(g, result.scored, 0.25) for g in range(result.green, result.scored + 1)
    )
    assert result.p_value == pytest.approx(exact, rel=1e-9)
    assert result.z == pytest.approx(
        (result.green - 0.25 * result.scored) / np.sqrt(result.scored * 0.25 * 0.75)
    )


def test_gumbel_p_value_is_the_exact_gamma_tail(key):
    watermark = Watermark(key, scheme="gumbel")
    result = watermark.detect(np.random.default_rng(3).integers(0, VOCAB, 80))
    assert result.p_value == pytest.approx(stats.gamma.sf(result.score, a=result.scored), rel=1e-9)
    assert result.green is None and result.green_fraction is None


def _log10_sum_exp(logs):
    top = max(logs)
    return (top + math.log(sum(math.exp(x - top) for x in logs))) / math.log(10)


def test_tiny_p_values_keep_their_magnitude_in_log10(key):
    n, gamma = 3000, 0.25
    for green in (3000, 2990):
        result = Watermark(key).scheme.test(score=float(green), scored=n)
        assert result.p_value == 0.0  # below float range ...
        tail = [
            math.lgamma(n + 1)
            - math.lgamma(g + 1)
            - math.lgamma(n - g + 1)
            + g * math.log(gamma)
            + (n - g) * math.log(1 - gamma)
            for g in range(green, n + 1)
        ]
        assert result.log10_p_value == pytest.approx(_log10_sum_exp(tail))  # ... but kept here
    score, scored = 5000.0, 100
    gumbel = Watermark(key, scheme="gumbel").scheme.test(score=score, scored=scored)
    erlang = [-score + k * math.log(score) - math.lgamma(k + 1) for k in range(scored)]
    assert gumbel.p_value == 0.0
    assert gumbel.log10_p_value == pytest.approx(_log10_sum_exp(erlang))


def test_repeated_windows_are_scored_once(key):
    watermark = Watermark(key, context_width=1)
    ids = np.random.default_rng(4).integers(0, VOCAB, 40)
    once = watermark.detect(ids)
    repeated = watermark.detect(np.tile(ids, 50))
    # The only new windows are the joins between copies (last token -> first token).
    assert repeated.scored == once.scored + 1
    assert repeated.total_windows == 50 * len(ids) - 1


def test_windows_copied_from_the_prompt_are_not_scored(key):
    watermark = Watermark(key, context_width=1)
    rng = np.random.default_rng(5)
    prompt = rng.integers(0, VOCAB, 100)
    answer = np.concatenate([prompt[10:60], rng.integers(0, VOCAB, 30)])
    with_prompt = watermark.detect(answer, prompt_ids=prompt)
    assert watermark.detect(answer).scored == 79
    assert with_prompt.scored == 79 - 49  # the 49 windows inside the copied span are dropped


def test_detect_batch_equals_detect_one_by_one(key):
    watermark = Watermark(key, context_width=2)
    rng = np.random.default_rng(6)
    texts = [rng.integers(0, VOCAB, n) for n in (5, 50, 300, 3)]
    prompts = [None, rng.integers(0, VOCAB, 20), texts[2][:40], None]
    batch = watermark.detect_batch(texts, prompts)
    assert batch == [
        watermark.detect_batch([t], [p])[0] for t, p in zip(texts, prompts, strict=True)
    ]
    assert batch[3].scored == 1


def test_scoreable_mask_limits_scoring_to_chosen_tokens(key):
    watermark = Watermark(key, context_width=1)
    rng = np.random.default_rng(8)
    texts = [rng.integers(0, VOCAB, 60), rng.integers(0, VOCAB, 30)]
    masks = [rng.random(60) < 0.5, np.zeros(30, dtype=bool)]
    everything = watermark.detect_batch(texts, scoreable=[np.ones(60, bool), np.ones(30, bool)])
    assert everything == watermark.detect_batch(texts)
    chosen, none = watermark.detect_batch(texts, scoreable=masks)
    # Window i scores token i (i >= k); the first token has no window of its own.
    assert chosen.scored == int(masks[0][1:].sum())
    assert (none.scored, none.total_windows) == (0, 29)
    kept = [i for i in range(1, 60) if masks[0][i]]
    green = watermark.detect_batch([texts[0]])[0]  # same key, every window
    assert chosen.scored <= green.scored
    assert watermark.detect(texts[0], scoreable=masks[0]).scored == len(kept)
    with pytest.raises(ValueError, match="one entry per token"):
        watermark.detect(texts[0], scoreable=masks[0][:10])


def test_corpus_detection_deduplicates_across_texts(key):
    watermark = Watermark(key)
    ids = np.random.default_rng(7).integers(0, VOCAB, 200)
    single = watermark.detect_corpus([ids])
    tripled = watermark.detect_corpus([ids, ids, ids])
    assert (tripled.scored, tripled.score, tripled.p_value) == (
        single.scored,
        single.score,
        single.p_value,
    )
    assert tripled.total_windows == 3 * single.total_windows
    per_text = watermark.detect_batch([ids, ids, ids])
    assert sum(r.scored for r in per_text) == 3 * single.scored


@pytest.mark.parametrize("width", [0, 1, 2, 4])
def test_packed_and_hashed_window_selection_agree(width, monkeypatch):
    rng = np.random.default_rng(width)
    texts = [rng.integers(0, 30, 200) for _ in range(10)]  # small alphabet: many repeats
    prompts = [rng.integers(0, 30, 30) for _ in range(10)]
    watermark = Watermark(WatermarkKey.generate(), context_width=width)
    fast_batch = watermark.detect_batch(texts, prompts)
    fast_corpus = watermark.detect_corpus(texts, prompts)
    monkeypatch.setattr(win._Codec, "for_shape", classmethod(lambda cls, *args: None))
    assert watermark.detect_batch(texts, prompts) == fast_batch
    assert watermark.detect_corpus(texts, prompts) == fast_corpus


def test_clean_text_is_calibrated_over_many_keys():
    rng = np.random.default_rng(8)
    ids = rng.integers(0, VOCAB, 5000)
    keys = [WatermarkKey(secret=rng.bytes(32), key_id=f"wk_seeded{i:04d}") for i in range(300)]
    p_values = [Watermark(k).detect(ids).p_value for k in keys]  # seeded: no lucky passes
    assert stats.kstest(p_values, "uniform").pvalue > 0.001
    assert sum(p < 0.01 for p in p_values) <= 10  # expected 3


def test_out_of_vocabulary_ids_are_rejected(key):
    with pytest.raises(VocabularyMismatchError, match="outside the watermark vocabulary"):
        Watermark(key, vocab_size=100).detect([1, 2, 100])
    with pytest.raises(VocabularyMismatchError):
        Watermark(key).detect([1, -2, 3])


def test_text_shorter_than_the_context_is_rejected(key):
    with pytest.raises(InputTooShortError):
        Watermark(key, context_width=2).detect([5, 6])
    with pytest.raises(InputTooShortError):
        Watermark(key).detect([])


def test_apply_rejects_logits_of_another_vocabulary(key):
    with pytest.raises(VocabularyMismatchError):
        Watermark(key).apply(np.zeros((2, 32000)), np.zeros((2, 3), dtype=np.int64))


@pytest.mark.parametrize(
    "params",
    [
        {"gamma": 0.0},
        {"gamma": 1.0},
        {"delta": -1.0},
        {"context_width": -1},
        {"scheme": "x"},
        {"vocab_size": 1},
    ],
)
def test_invalid_watermark_parameters_are_refused(key, params):
    with pytest.raises(ValueError):
        Watermark(key, **params)


@pytest.mark.parametrize(
    ("scheme", "extreme"),
    [("kgw", 3000.0), ("gumbel", 20000.0)],  # sums far beyond float range
)
def test_vectorised_tests_match_scalar_ones_across_regimes(key, scheme, extreme):
    watermark = Watermark(key, scheme=scheme)
    scores = np.array([extreme, 12.0, 0.0])
    scored = np.array([3000, 40, 0])
    batch = null_tests(watermark.scheme, scores, scored)
    assert batch == [watermark.scheme.test(s, n) for s, n in zip(scores, scored, strict=True)]
    assert batch[2].p_value == 1.0 and batch[2].z == 0.0  # nothing scored
    assert batch[0].p_value == 0.0 and math.isfinite(batch[0].log10_p_value)  # underflow kept
    assert 0.0 < batch[1].p_value < 1.0


def test_cli_reads_vllms_own_marks_given_its_watermark_config(tmp_path):
    """`detect --vllm-config`: marks made with vLLM's PRF (here our exact copy of it; the
    copy is held to vLLM's own package in test_vllm.py) test positive, others do not."""
    import json

    from distillguard.watermark.vllm_gumbel import philox_uniform

    config = {"key": 2**63 + 12345, "algorithm": "gumbel", "context_width": 3}
    (tmp_path / "vllm.json").write_text(json.dumps(config))
    rng = np.random.default_rng(2)
    vocab = np.arange(300)
    marked: list[int] = []
    for _ in range(80):  # Gumbel-max over random logits with the keyed noise
        context = np.array([([-1] * 3 + marked)[-3:]] * len(vocab))
        u = philox_uniform(config["key"], context, vocab).astype(np.float64)
        marked.append(int(np.argmax(rng.standard_normal(300) - np.log(-np.log(u)))))
    lines = [{"token_ids": marked}, {"token_ids": rng.integers(0, 300, 80).tolist()}]
    (tmp_path / "ids.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = run(
        "watermark",
        "detect",
        str(tmp_path / "ids.jsonl"),
        "--vllm-config",
        str(tmp_path / "vllm.json"),
    )
    assert result.returncode == 0, result.stderr
    found = [json.loads(line) for line in result.stdout.splitlines()]
    assert [f["scheme"] for f in found] == ["vllm-gumbel"] * 2
    assert found[0]["p_value"] < 1e-10 < 0.01 < found[1]["p_value"]

    (tmp_path / "bad.json").write_text('{"key": "secret"}')
    bad = run(
        "watermark",
        "detect",
        str(tmp_path / "ids.jsonl"),
        "--vllm-config",
        str(tmp_path / "bad.json"),
    )
    assert_user_error(bad, "`key` must be an integer")
    both = run(
        "watermark",
        "detect",
        str(tmp_path / "ids.jsonl"),
        "--vllm-config",
        str(tmp_path / "vllm.json"),
        "--key",
        str(tmp_path / "vllm.json"),
    )
    assert_user_error(both, "exactly one of --key or --vllm-config")
