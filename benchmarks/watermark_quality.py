"""Calibration, power and text quality of the watermark on the bundled model.

    python benchmarks/watermark_quality.py [--keys 1000] [--answers 50] [--max-tokens 200]

* Calibration: for >= 1,000 random keys, p-values on text that never saw the key
  (human prompts from ../shared/data/prompts, and unwatermarked model answers)
  must be uniform (KS test) and rarely below alpha (false-positive rate). An
  ablation scores the same corpus without de-duplication / prompt exclusion.
* Power: answers of up to --max-tokens new tokens with the default watermark,
  detected at p < 1e-6; at the API-default temperature 1.0 and at 0.7.
* Quality: perplexity of watermarked vs unwatermarked answers under the same
  (unbiased) model, conditioned on the prompt.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from scipy import stats

from common import corpus_prompts, save
from distillguard.config import load_settings
from distillguard.engine.bundled import load_text_tokenizer
from distillguard.engine.transformers_engine import Completion, TransformersEngine
from distillguard.watermark import Watermark, WatermarkKey
from distillguard.watermark.windows import sliding

ALPHAS = (1e-2, 1e-3)
POWER_ALPHA = 1e-6


def perplexities(engine: TransformersEngine, completions: list[Completion]) -> list[float]:
    """exp(mean negative log-likelihood) of each answer given its prompt, unbiased model."""
    values = []
    with torch.inference_mode():
        for c in completions:
            if not c.completion_ids:
                continue
            ids = torch.tensor([c.prompt_ids + c.completion_ids])
            logits = engine.model(ids).logits[0, len(c.prompt_ids) - 1 : -1]
            nll = torch.nn.functional.cross_entropy(logits, ids[0, len(c.prompt_ids) :])
            values.append(math.exp(float(nll)))
    return values


def power(engine, prompts, max_tokens, temperature, seed):
    watermark = Watermark(WatermarkKey.generate())
    args = dict(max_new_tokens=max_tokens, temperature=temperature, top_p=1.0, batch_size=25)
    started = time.perf_counter()
    marked = engine.generate(prompts, watermark=watermark, seed=seed, **args)
    plain = engine.generate(prompts, seed=seed, **args)
    seconds = time.perf_counter() - started
    results = [watermark.detect(c.completion_ids, c.prompt_ids) for c in marked]
    detected = [r.p_value < POWER_ALPHA for r in results]
    long = [
        r.p_value < POWER_ALPHA
        for r, c in zip(results, marked, strict=True)
        if len(c.completion_ids) >= 0.9 * max_tokens
    ]
    ppl_marked, ppl_plain = perplexities(engine, marked), perplexities(engine, plain)
    return plain, {
        "temperature": temperature,
        "answers": len(marked),
        "new_tokens_median": float(np.median([len(c.completion_ids) for c in marked])),
        "scored_median": float(np.median([r.scored for r in results])),
        "green_fraction_median": float(np.median([r.green_fraction for r in results])),
        "detected_rate": float(np.mean(detected)),
        "long_answers": len(long),
        "detected_rate_long_answers": float(np.mean(long)) if long else None,
        "log10_p_median": float(np.median([r.log10_p_value for r in results])),
        "log10_p_worst": float(max(r.log10_p_value for r in results)),
        "perplexity_median_watermarked": float(np.median(ppl_marked)),
        "perplexity_median_unwatermarked": float(np.median(ppl_plain)),
        "perplexity_ratio_of_medians": float(np.median(ppl_marked) / np.median(ppl_plain)),
        "generation_seconds": round(seconds, 1),
    }


def naive_corpus_p(watermark: Watermark, texts: list[np.ndarray]) -> float:
    """Every window counted, repeats and all: what a detector without de-duplication does."""
    windows = [sliding(t, watermark.config.context_width) for t in texts]
    contexts = np.concatenate([w[0] for w in windows])
    tokens = np.concatenate([w[1] for w in windows])
    scores = watermark.scheme.token_scores(watermark.hash.values(contexts, tokens))
    return watermark.scheme.test(float(scores.sum()), len(tokens)).p_value


def calibration(scheme, n_keys, corpora):
    out = {}
    for name, (texts, prompts) in corpora.items():
        corpus_p, naive_p, per_text = [], [], []
        for _ in range(n_keys):
            watermark = Watermark(WatermarkKey.generate(), scheme=scheme)
            corpus_p.append(watermark.detect_corpus(texts, prompts).p_value)
            naive_p.append(naive_corpus_p(watermark, texts))
            per_text.extend(r.p_value for r in watermark.detect_batch(texts, prompts) if r.scored)
        per_text = np.array(per_text)
        out[name] = {
            "texts": len(texts),
            "tokens": int(sum(len(t) for t in texts)),
            "keys": n_keys,
            "ks_p_corpus": float(stats.kstest(corpus_p, "uniform").pvalue),
            "ks_p_corpus_without_dedup": float(stats.kstest(naive_p, "uniform").pvalue),
            "fpr_corpus_without_dedup_at_1e-3": float(np.mean(np.array(naive_p) < 1e-3)),
            "per_text_tests": int(per_text.size),
            **{f"fpr_per_text_at_{a:g}": float(np.mean(per_text < a)) for a in ALPHAS},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--answers", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--human-texts", type=int, default=2000)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.7])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    settings = load_settings()
    engine = TransformersEngine.bundled(settings.cache_dir)
    tokenizer = load_text_tokenizer(settings.cache_dir)
    prompts = corpus_prompts(args.answers, seed=args.seed)
    power_rows, null_answers = [], []
    for temperature in args.temperatures:
        plain, row = power(engine, prompts, args.max_tokens, temperature, args.seed)
        power_rows.append(row)
        null_answers.extend(plain)
        print("power", row, flush=True)

    human = [
        np.array(tokenizer.encode(p, add_special_tokens=False).ids)
        for p in corpus_prompts(args.human_texts, seed=args.seed + 1)
    ]
    corpora = {
        "human_prompts": (human, None),
        "model_answers": (
            [np.array(c.completion_ids) for c in null_answers],
            [np.array(c.prompt_ids) for c in null_answers],
        ),
    }
    calibrations = {}
    for scheme in ("kgw", "gumbel"):
        calibrations[scheme] = calibration(scheme, args.keys, corpora)
        print("calibration", scheme, calibrations[scheme], flush=True)
    path = save(
        "watermark_quality", {"args": vars(args), "power": power_rows, "calibration": calibrations}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
