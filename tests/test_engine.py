"""The real bundled model: GGUF conversion cache, batched sampled generation, detection."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distillguard.engine.bundled import cached_model_dir, load_text_tokenizer
from distillguard.errors import VocabularyMismatchError
from distillguard.watermark import Watermark, WatermarkKey

from .helpers import assert_user_error, run

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def module_key():
    return WatermarkKey(secret=bytes(range(40, 72)), key_id="wk_fixedtestkey03")  # no luck


@pytest.fixture(scope="module")
def marked(engine, prompts, module_key):
    watermark = Watermark(module_key)
    return engine.generate(prompts, max_new_tokens=64, watermark=watermark, seed=1)


def test_watermarked_answers_are_detected(marked, module_key):
    watermark = Watermark(module_key)
    results = [watermark.detect(c.completion_ids, c.prompt_ids) for c in marked]
    # 64 tokens is short and code answers are low-entropy: per answer we ask for
    # p < 0.01 in most; the 200-token power figure is in docs/benchmarks.md.
    assert sum(r.p_value < 1e-2 for r in results) >= 5, [r.p_value for r in results]
    corpus = watermark.detect_corpus([c.completion_ids for c in marked])
    assert corpus.log10_p_value < -20
    assert corpus.green_fraction > 0.45


def test_unwatermarked_answers_are_not(unwatermarked_answers, module_key):
    plain = unwatermarked_answers
    watermark = Watermark(module_key)
    corpus = watermark.detect_corpus([c.completion_ids for c in plain])
    assert corpus.p_value > 1e-3
    assert 0.15 < corpus.green_fraction < 0.35


def test_batched_answers_are_real_text(marked, unwatermarked_answers):
    for completion in [*marked, *unwatermarked_answers]:
        assert completion.completion_ids, "empty answer"
        assert completion.finish_reason in {"stop", "length"}
        assert len(completion.completion_ids) <= 64
    assert len({c.text for c in marked}) == len(marked)  # distinct prompts, distinct answers


def test_gumbel_scheme_with_the_real_model(engine, prompts):
    key = WatermarkKey(secret=bytes(range(72, 104)), key_id="wk_fixedtestkey04")
    watermark = Watermark(key, scheme="gumbel")
    completions = engine.generate(prompts[:4], max_new_tokens=64, watermark=watermark, seed=2)
    corpus = watermark.detect_corpus([c.completion_ids for c in completions])
    assert corpus.log10_p_value < -10
    other_key = WatermarkKey(secret=bytes(range(104, 136)), key_id="wk_fixedtestkey05")
    other = Watermark(other_key, scheme="gumbel")
    assert other.detect_corpus([c.completion_ids for c in completions]).p_value > 1e-3


def test_key_for_another_vocabulary_is_refused(engine, prompts):
    watermark = Watermark(WatermarkKey.generate(), vocab_size=32000)
    with pytest.raises(VocabularyMismatchError, match="32000"):
        engine.generate(prompts[:1], max_new_tokens=4, watermark=watermark)


def test_fast_text_tokenizer_matches_the_model_tokenizer(engine, cache_dir, sample_prompts):
    fast = load_text_tokenizer(cache_dir)
    for text in [*sample_prompts, "emoji 🙂 中文", "  spaces\tand\ttabs\n\n"]:
        expected = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert fast.encode(text, add_special_tokens=False).ids == expected


def test_cold_cache_converts_once_and_then_loads_from_cache(tmp_path, engine):
    conversions = []
    path = cached_model_dir(tmp_path, on_convert=conversions.append)
    assert len(conversions) == 1 and (path / "model.safetensors").is_file()
    assert cached_model_dir(tmp_path, on_convert=conversions.append) == path
    assert len(conversions) == 1
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no staging folder left
    from safetensors.torch import load_file

    weights = load_file(str(path / "model.safetensors"))
    reference = engine.model.state_dict()
    assert len(weights) > 100
    # Tied embeddings are stored once, under the embedding's name: vLLM skips a tied
    # model's `lm_head.weight` and would otherwise serve an all-zero embedding.
    assert "model.embed_tokens.weight" in weights and "lm_head.weight" not in weights
    for name, tensor in weights.items():
        assert np.array_equal(tensor.numpy(), reference[name].numpy()), name


def test_cli_generate_then_detect_text(tmp_path, cache_dir):
    env = {"DISTILLGUARD_CACHE_DIR": str(cache_dir)}
    key = tmp_path / "key.json"
    # A fixed key with the seeded generation below: 80-token answers are detected with high
    # probability, not certainty (docs/benchmarks.md), and a test must not pass by luck.
    secret = bytes(range(32))
    WatermarkKey(secret=secret, key_id="wk_fixedtestkey00").save(key)
    prompts = tmp_path / "prompts.jsonl"
    questions = ("Explain how a rainbow forms.", "Write a short story about a lighthouse keeper.")
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in questions))
    generated = run(
        "generate",
        "--prompts",
        str(prompts),
        "--key",
        str(key),
        "--max-tokens",
        "80",
        "--seed",
        "3",
        env=env,
    )
    assert generated.returncode == 0, generated.stderr
    records = [json.loads(line) for line in generated.stdout.splitlines()]
    assert [r["prompt"] for r in records] == list(questions)
    texts = []
    for n, record in enumerate(records):
        path = tmp_path / f"answer{n}.txt"
        path.write_text(record["response"])
        texts.append(str(path))
    detected = run("watermark", "detect", "--key", str(key), *texts, env=env)
    assert detected.returncode == 0, detected.stderr
    results = [json.loads(line) for line in detected.stdout.splitlines()]
    assert len(results) == 2
    assert all(r["p_value"] < 1e-3 for r in results), results


def test_cli_generate_with_a_mismatched_key(tmp_path, cache_dir):
    env = {"DISTILLGUARD_CACHE_DIR": str(cache_dir)}
    key = tmp_path / "key.json"
    assert run("watermark", "keygen", "--out", str(key), "--vocab-size", "32000").returncode == 0
    assert_user_error(run("generate", "hello", "--key", str(key), env=env), "32000")


def test_cli_detect_reads_text_from_stdin(tmp_path, cache_dir):
    key = tmp_path / "key.json"
    assert run("watermark", "keygen", "--out", str(key)).returncode == 0
    text = "Plain human text about gardening, written long before any key existed.\n"
    result = run(
        "watermark",
        "detect",
        "--key",
        str(key),
        "-",
        stdin=text,
        env={"DISTILLGUARD_CACHE_DIR": str(cache_dir)},
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["input"] == "-" and record["scored"] >= 10 and record["p_value"] > 1e-4
