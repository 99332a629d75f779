"""Speed of the watermark, side by side with transformers' built-in one, in one run.

    python benchmarks/watermark_bench.py [--sequences 5000] [--baseline-sequences 20]

* Detection: tokens/s on the same token sequences (answers-sized chunks of real
  text from ../shared/data/prompts), ours (de-duplication on) vs
  `transformers.WatermarkDetector` (ignore_repeated_ngrams=True), both with
  gamma 0.25 and a 1-token context, on one core.
* Generation: time per decoding step (prefill subtracted), batch 16 of short
  chat prompts, bundled model: no watermark vs our LogitsProcessor vs
  transformers' `WatermarkingConfig`; rounds are interleaved so machine noise
  hits all variants alike. The processors' own time
  is also measured directly (a timer around each call), which is immune to
  that noise.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    WatermarkDetector,
    WatermarkingConfig,
)
from transformers.generation.logits_process import (
    WatermarkLogitsProcessor as HFWatermarkLogitsProcessor,
)

from common import corpus_prompts, save
from distillguard.config import load_settings
from distillguard.engine.bundled import load_text_tokenizer
from distillguard.engine.transformers_engine import TransformersEngine
from distillguard.watermark import Watermark, WatermarkConfig, WatermarkKey
from distillguard.watermark.torch_processor import WatermarkLogitsProcessor

DEFAULT = WatermarkConfig()  # measure what users get
GAMMA, DELTA, WIDTH = DEFAULT.gamma, DEFAULT.delta, DEFAULT.context_width


def token_sequences(tokenizer, n: int, length: int, seed: int) -> list[np.ndarray]:
    """Real text cut into answer-sized token sequences."""
    ids: list[int] = []
    for prompt in corpus_prompts(min(24000, n * 4), seed=seed):
        ids.extend(tokenizer.encode(prompt, add_special_tokens=False).ids)
        if len(ids) >= n * length:
            break
    flat = np.array(ids[: n * length])
    return [flat[i : i + length] for i in range(0, len(flat) - length + 1, length)]


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def detection(engine, sequences, baseline_count):
    """Tokens/s on one core. numpy runs these kernels single-threaded; torch is pinned."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    watermark = Watermark(WatermarkKey.generate(), gamma=GAMMA, delta=DELTA, context_width=WIDTH)
    watermark.detect(sequences[0])  # build the key's token table outside the timing
    tokens = sum(len(s) for s in sequences)
    batch_s = best_of(3, lambda: watermark.detect_batch(sequences))
    loop_s = best_of(3, lambda: [watermark.detect(s) for s in sequences])

    subset = sequences[:baseline_count]
    subset_tokens = sum(len(s) for s in subset)
    hf_config = WatermarkingConfig(
        greenlist_ratio=GAMMA, bias=DELTA, context_width=WIDTH, seeding_scheme="lefthash"
    )
    detector = WatermarkDetector(engine.model.config, "cpu", hf_config, ignore_repeated_ngrams=True)
    started = time.perf_counter()
    for s in subset:
        detector(torch.tensor(s)[None, :])
    hf_s = time.perf_counter() - started
    subset_batch_s = best_of(5, lambda: watermark.detect_batch(subset))
    subset_loop_s = best_of(5, lambda: [watermark.detect(s) for s in subset])
    torch.set_num_threads(threads)
    transformers_rate = subset_tokens / hf_s
    return {
        "tokens_per_sequence": len(sequences[0]),
        "same_sequences": {
            "sequences": len(subset),
            "transformers_tokens_per_s": transformers_rate,
            "ours_batch_tokens_per_s": subset_tokens / subset_batch_s,
            "ours_one_by_one_tokens_per_s": subset_tokens / subset_loop_s,
            "speedup_batch": hf_s / subset_batch_s,
            "speedup_one_by_one": hf_s / subset_loop_s,
        },
        "large": {
            "sequences": len(sequences),
            "ours_batch_tokens_per_s": tokens / batch_s,
            "ours_one_by_one_tokens_per_s": tokens / loop_s,
            "speedup_batch_vs_transformers_rate": (tokens / batch_s) / transformers_rate,
        },
    }


class Timed(LogitsProcessor):
    """Accumulates the wall time spent inside the wrapped processor."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, input_ids, scores):
        started = time.perf_counter()
        out = self.inner(input_ids, scores)
        self.seconds += time.perf_counter() - started
        self.calls += 1
        return out


def generation(engine, prompts, steps, rounds):
    watermark = Watermark(WatermarkKey.generate(), gamma=GAMMA, delta=DELTA, context_width=WIDTH)
    vocab = engine.vocab_size
    batch = [engine.chat_ids(p) for p in prompts]
    width = max(len(b) for b in batch)
    pad = engine.tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(b)) + b for b in batch])
    attention = (
        torch.arange(width)[None, :] >= torch.tensor([width - len(b) for b in batch])[:, None]
    ).long()
    common = dict(
        input_ids=input_ids,
        attention_mask=attention,
        max_new_tokens=steps,
        min_new_tokens=steps,
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        pad_token_id=pad,
    )

    def variants():
        ours = Timed(WatermarkLogitsProcessor(watermark))
        theirs = Timed(
            HFWatermarkLogitsProcessor(vocab, "cpu", GAMMA, DELTA, 15485863, "lefthash", WIDTH)
        )
        return {
            "none": ({}, None),
            "distillguard": ({"logits_processor": LogitsProcessorList([ours])}, ours),
            "transformers_WatermarkingConfig": (
                {
                    "watermarking_config": WatermarkingConfig(
                        greenlist_ratio=GAMMA,
                        bias=DELTA,
                        context_width=WIDTH,
                        seeding_scheme="lefthash",
                    )
                },
                None,
            ),
            "transformers_processor_timed": (
                {"logits_processor": LogitsProcessorList([theirs])},
                theirs,
            ),
        }

    per_run: dict[str, list[float]] = {}
    processor_ms: dict[str, list[float]] = {}
    prefill: list[float] = []
    with torch.inference_mode():
        engine.model.generate(**{**common, "max_new_tokens": 4, "min_new_tokens": 4})  # warm up
        for _ in range(rounds):
            # Prefill + one token, to take the prompt's one-off cost out of "per step".
            started = time.perf_counter()
            engine.model.generate(**{**common, "max_new_tokens": 1, "min_new_tokens": 1})
            prefill.append(time.perf_counter() - started)
            for name, (extra, timer) in variants().items():
                torch.manual_seed(0)
                started = time.perf_counter()
                engine.model.generate(**common, **extra)
                per_run.setdefault(name, []).append(time.perf_counter() - started)
                if timer is not None:
                    processor_ms.setdefault(name, []).append(1000 * timer.seconds / timer.calls)
    first = statistics.median(prefill)
    step_ms = {n: 1000 * (statistics.median(v) - first) / (steps - 1) for n, v in per_run.items()}
    base = step_ms["none"]
    return {
        "batch": len(prompts),
        "steps": steps,
        "rounds": rounds,
        "decode_step_ms_median": step_ms,
        "end_to_end_overhead_pct": {n: 100 * (v / base - 1) for n, v in step_ms.items()},
        "processor_ms_per_step": {n: statistics.median(v) for n, v in processor_ms.items()},
        "processor_share_of_plain_decode_step_pct": {
            n: 100 * statistics.median(v) / base for n, v in processor_ms.items()
        },
    }


def short_prompts(engine, n: int, seed: int, max_tokens: int = 48) -> list[str]:
    """Chat-sized prompts, so that decoding, not the prompt's prefill, is what is timed."""
    pool = corpus_prompts(20 * n, seed=seed)
    return [p for p in pool if len(engine.tokenizer(p)["input_ids"]) <= max_tokens][:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sequences", type=int, default=5000)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--baseline-sequences", type=int, default=50)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    settings = load_settings()
    engine = TransformersEngine.bundled(settings.cache_dir)
    tokenizer = load_text_tokenizer(settings.cache_dir)
    sequences = token_sequences(tokenizer, args.sequences, args.length, seed=0)
    detect = detection(engine, sequences, args.baseline_sequences)
    print("detection", detect, flush=True)
    gen = generation(engine, short_prompts(engine, args.batch, seed=1), args.steps, args.rounds)
    print("generation", gen, flush=True)
    result = {"args": vars(args), "detection": detect, "generation": gen}
    print(f"wrote {save('watermark_bench', result)}")


if __name__ == "__main__":
    main()
