"""Speed of a suspect test after the forward pass: window selection and scoring.

    python benchmarks/suspect_bench.py [--tokens 2000000] [--cohorts 64] [--repeat 3]

Synthetic reading-mode input shaped like a real one: answers of 60-300 tokens with
chat prompts of 20-120, ids drawn from a Zipf law over SmolLM2's 49,152 tokens (natural
text repeats contexts, which is what de-duplication works on), and a suspect whose top-1
prediction equals our token half the time. What is timed is everything `read` and
`judge` do after the model: pack the ids, pick each answer's first contexts, de-duplicate
per cohort, drop prompt windows, and score every cohort's key and as many control keys.

Cohorts share nothing, so selection and scoring run on one thread per CPU. Beside it, in
the same run: the selection on one thread, `np.sort` of as many uint64 (what the machine
does at best for one pass of de-duplication), and the same windows pooled and scored under
every key (the test before windows were kept per cohort). Target: >= 5 M answer tokens/s.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from common import save
from distillguard.suspect.reading import ReadItem, reading_windows
from distillguard.suspect.verdict import judge
from distillguard.watermark import WatermarkKey

VOCAB = 49_152
TARGET = 5_000_000


def synthetic(tokens: int, cohorts: int, seed: int = 0) -> tuple[list, list, list[int]]:
    rng = np.random.default_rng(seed)
    items, predicted, groups = [], [], []
    made = 0
    while made < tokens:
        length = int(rng.integers(60, 300))
        answer = (rng.zipf(1.2, size=length) - 1) % VOCAB
        prompt = (rng.zipf(1.2, size=int(rng.integers(20, 120))) - 1) % VOCAB
        guess = np.where(rng.random(length) < 0.5, answer, rng.integers(0, VOCAB, length))
        items.append(ReadItem(prompt, answer))
        predicted.append(guess.astype(np.int64))
        groups.append(len(items) % cohorts)
        made += length
    return items, predicted, groups


def best_of(repeat: int, run) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        clock = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - clock)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=2_000_000)
    parser.add_argument("--cohorts", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    items, predicted, groups = synthetic(args.tokens, args.cohorts)
    tokens = sum(len(i.answer_ids) for i in items)
    key = WatermarkKey.generate()
    width = 2

    def per_cohort():
        selected = reading_windows(
            items, predicted, width=width, vocab_size=VOCAB, groups=groups
        ).by_segment()
        return judge(key, selected, mode="reading", cohorts=args.cohorts)

    def pooled():
        selected = reading_windows(items, predicted, width=width, vocab_size=VOCAB)
        return judge(key, selected, mode="reading", cohorts=args.cohorts)

    def select_only(workers=None):
        return reading_windows(
            items, predicted, width=width, vocab_size=VOCAB, groups=groups, workers=workers
        )

    codes = np.random.default_rng(1).integers(0, 2**63, size=tokens, dtype=np.int64)
    sort_s, _ = best_of(args.repeat, lambda: np.sort(codes))
    select_s, _ = best_of(args.repeat, select_only)
    select_1_s, _ = best_of(args.repeat, lambda: select_only(1))
    whole_s, verdict = best_of(args.repeat, per_cohort)
    pooled_s, _ = best_of(1, pooled)
    scored = sum(t.result.scored for t in verdict.tests)
    report = {
        "answer_tokens": tokens,
        "answers": len(items),
        "cohorts": args.cohorts,
        "windows_scored": scored,
        "np_sort_seconds": round(sort_s, 4),
        "select_seconds": round(select_s, 4),
        "select_one_thread_seconds": round(select_1_s, 4),
        "cpus": os.cpu_count(),
        "select_and_judge_seconds": round(whole_s, 4),
        "pooled_all_keys_seconds": round(pooled_s, 4),
        "tokens_per_second": round(tokens / whole_s),
        "vs_np_sort": round(whole_s / sort_s, 2),
        "target_met": tokens / whole_s >= TARGET,
        "runs": args.repeat,
    }
    print(
        f"{tokens:,} answer tokens, {args.cohorts} cohorts: select + judge "
        f"{whole_s:.3f} s = {tokens / whole_s / 1e6:.2f} M tokens/s "
        f"({whole_s / sort_s:.1f}x one np.sort of as many uint64; selection alone "
        f"{select_s:.3f} s on {os.cpu_count()} threads, {select_1_s:.3f} s on one); "
        f"pooled under every key {pooled_s:.3f} s; "
        f"target {TARGET / 1e6:g} M tokens/s {'met' if report['target_met'] else 'NOT met'}"
    )
    print(f"wrote {save('suspect_bench', report)}")


if __name__ == "__main__":
    main()
