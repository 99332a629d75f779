"""Helpers shared by the benchmark scripts: the shared prompt corpus and result files."""

from __future__ import annotations

import json
import os
import platform
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from distillguard.engine.prompts import read_prompts

ROOT = Path(__file__).resolve().parents[1]
SHARED_PROMPTS = ROOT.parent / "shared" / "data" / "prompts"
OUT = ROOT / "benchmarks" / "out"
NOT_TRAFFIC = {"cot_elicitation"}  # phrases, not prompts


def corpus_prompts(n: int, seed: int, directory: Path = SHARED_PROMPTS) -> list[str]:
    """`n` first-turn prompts drawn at random (seeded) from every corpus file."""
    files = sorted(p for p in directory.glob("*.jsonl") if p.stem not in NOT_TRAFFIC)
    if not files:
        raise SystemExit(f"no prompt corpus in {directory} (expected ../shared beside the repo)")
    pool = [str(p) for f in files for p in read_prompts(f)]
    return random.Random(seed).sample(pool, n)


def save(name: str, result: dict, path: Path | None = None) -> Path:
    """Write `result` (with the machine) to `path`, by default benchmarks/out/<name>.json."""
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cpu", **result}
    path = path or OUT / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
