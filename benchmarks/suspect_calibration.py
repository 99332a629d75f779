"""Reading mode's calibration: a clean suspect must be accused at rate alpha, no more.

    python benchmarks/suspect_calibration.py [--keys 40] [--answers 8] [--tokens 48]

For each of `--keys` fresh keys, the bundled model answers `--answers` prompts of the
shared corpus with that key's watermark, then reads them back as the suspect: it never
learned from them, so the reading-mode p-values must be uniform. Reports their median,
the share below 0.05 and 0.01, and the smallest.
"""

from __future__ import annotations

import argparse

import numpy as np

from common import corpus_prompts, save
from distillguard.config import load_settings
from distillguard.engine.transformers_engine import TransformersEngine
from distillguard.suspect.reading import ReadItem, predictions, reading_windows
from distillguard.watermark import Watermark, WatermarkKey


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=40)
    parser.add_argument("--answers", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=48)
    args = parser.parse_args()
    engine = TransformersEngine.bundled(load_settings().cache_dir)
    prompts = corpus_prompts(args.keys * args.answers, seed=11)
    p_values = []
    for trial in range(args.keys):
        watermark = Watermark.from_key(WatermarkKey.generate())
        chosen = prompts[trial * args.answers : (trial + 1) * args.answers]
        answers = engine.generate(
            chosen, max_new_tokens=args.tokens, watermark=watermark, seed=trial, batch_size=8
        )
        items = [ReadItem(a.prompt_ids, a.completion_ids) for a in answers]
        windows = reading_windows(
            items,
            predictions(engine.model, items),
            width=watermark.config.context_width,
            vocab_size=watermark.config.vocab_size,
        )
        result = watermark.detect_windows(windows)
        p_values.append(result.p_value)
        print(
            f"key {trial}: {len(windows)} windows, green {result.green_fraction:.3f}, "
            f"p {result.p_value:.3g}",
            flush=True,
        )
    p = np.array(p_values)
    report = {
        "keys": args.keys,
        "median_p": float(np.median(p)),
        "below_0.05": float(np.mean(p < 0.05)),
        "below_0.01": float(np.mean(p < 0.01)),
        "smallest_p": float(p.min()),
    }
    print(report)
    print(f"wrote {save('suspect_calibration', report)}")


if __name__ == "__main__":
    main()
