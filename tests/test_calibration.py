"""Reduced calibration (the full run is benchmarks/watermark_quality.py).

Under the null (text that never saw the key) p-values must be uniform over
keys, and a strict threshold must almost never fire.
"""

import numpy as np
import pytest
from scipy import stats

from distillguard.engine.bundled import load_text_tokenizer
from distillguard.watermark import Watermark, WatermarkKey

pytestmark = pytest.mark.model
KEYS = 300


@pytest.fixture(scope="module")
def human_texts(cache_dir, sample_prompts):
    tokenizer = load_text_tokenizer(cache_dir)
    return [np.array(tokenizer.encode(p, add_special_tokens=False).ids) for p in sample_prompts]


@pytest.mark.parametrize("scheme", ["kgw", "gumbel"])
@pytest.mark.parametrize("source", ["human", "model"])
def test_p_values_are_uniform_over_random_keys(scheme, source, human_texts, unwatermarked_answers):
    if source == "human":
        texts, prompts = human_texts, None
    else:
        texts = [np.array(c.completion_ids) for c in unwatermarked_answers]
        prompts = [np.array(c.prompt_ids) for c in unwatermarked_answers]
    corpus_p, per_text_p = [], []
    for _ in range(KEYS):
        watermark = Watermark(WatermarkKey.generate(), scheme=scheme)
        corpus_p.append(watermark.detect_corpus(texts, prompts).p_value)
        per_text_p.extend(r.p_value for r in watermark.detect_batch(texts, prompts) if r.scored)
    assert stats.kstest(corpus_p, "uniform").pvalue > 0.01
    per_text = np.array(per_text_p)
    # Exact tails of discrete scores are conservative: never more false alarms than alpha.
    for alpha in (1e-2, 1e-3):
        expected = alpha * per_text.size
        assert (per_text < alpha).sum() <= expected + 3 * np.sqrt(expected) + 1
