"""Run by the vLLM virtualenv (tests/test_vllm.py): vLLM's own watermark, for comparison.

For each job it marks token sequences with vLLM's `GumbelWatermarker` over random logits
(a stand-in model: the marks are what is tested, not the text), adds unmarked ones, and
writes what `vllm.v1.watermarking`'s detectors say of each, plus raw PRF values, as JSON.
"""

import json
import sys

import torch
from vllm.v1.watermarking import (
    DualKeyGumbelWatermarkDetector,
    GumbelWatermarkDetector,
    GumbelWatermarker,
    PhiloxPRF,
    derive_watermark_key,
)

VOCAB = 512
job = json.load(sys.stdin)
generator = torch.Generator().manual_seed(job["seed"])
out = {"cases": [], "prf": []}
for case in job["cases"]:
    key, width, alpha = case["key"], case["context_width"], case.get("alpha", 0.1)
    dual = case["algorithm"] == "dual_key_gumbel"
    marking_key = derive_watermark_key(key, b"key_a") if dual else key
    marker = GumbelWatermarker(marking_key, width)
    sequences = []
    for marked in (True, False):
        ids = [int(i) for i in torch.randint(0, VOCAB, (case["prompt"],), generator=generator)]
        start = len(ids)
        for _ in range(case["length"]):
            logits = torch.randn(1, VOCAB, generator=generator) * 2.0
            if marked:
                context = torch.tensor([([-1] * width + ids)[-width:]])
                ids.append(int(marker._sample_watermarked(logits, context).token_ids[0]))
            else:
                ids.append(int(torch.multinomial(logits.softmax(-1), 1, generator=generator)))
        sequences.append(ids[start:])
    if dual:
        detector = DualKeyGumbelWatermarkDetector(key, width, alpha=alpha)
    else:
        detector = GumbelWatermarkDetector(key, width)
    for ids in sequences:
        found = detector.detect(ids)
        out["cases"].append(
            {
                **case,
                "token_ids": ids,
                "score": found.score,
                "p_value": found.p_value,
                "scored": found.num_scored_tokens,
            }
        )
for key, width in job["prf"]:
    contexts = torch.randint(-1, 200_000, (64, width), generator=generator)
    tokens = torch.randint(0, 200_000, (64,), generator=generator)
    values = PhiloxPRF(key).uniform(contexts, tokens.unsqueeze(-1)).squeeze(-1)
    out["prf"].append(
        {
            "key": key,
            "contexts": contexts.tolist(),
            "tokens": tokens.tolist(),
            "uniform": values.tolist(),
        }
    )
json.dump(out, sys.stdout)
