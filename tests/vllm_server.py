"""A real vLLM server (the venv of scripts/vllm.sh) serving the bundled model, for the
integration tests and benchmarks/vllm_bench.py."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).parent.parent
VLLM_PYTHON = ROOT / ".vllm" / "bin" / "python"
PLUGIN = "distillguard.engine.vllm_plugin:CohortWatermark"
MODEL = "smollm2"


def plugin_env(key_file: Path, cohorts: int) -> dict[str, str]:
    """What the plug-in reads: the gateway's own settings for the master key and cohorts."""
    return {
        **os.environ,
        "DISTILLGUARD_GATEWAY__WATERMARK_KEY": str(key_file),
        "DISTILLGUARD_GATEWAY__COHORTS": str(cohorts),
        "HF_HUB_OFFLINE": "1",
    }


def start_vllm(
    model_dir: Path,
    port: int,
    log: Path,
    *,
    key_file: Path | None,
    cohorts: int = 64,
    dtype: str = "float32",
    eager: bool = True,
    kv_cache_gib: int = 1,
) -> subprocess.Popen:
    """`vllm.entrypoints.openai.api_server` on `port`, with the plug-in when given a key.
    `eager` skips vLLM's compile step: up in ~1 minute instead of ~4 on 2 cores."""
    if not VLLM_PYTHON.is_file():
        raise RuntimeError(f"{VLLM_PYTHON} is missing: run scripts/vllm.sh (`make test` does)")
    command = [
        str(VLLM_PYTHON),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        MODEL,
        "--dtype",
        dtype,
        "--max-model-len",
        "2048",
        "--port",
        str(port),
    ]
    if eager:
        command.append("--enforce-eager")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if key_file is not None:
        command += ["--logits-processors", PLUGIN]
        env = plugin_env(key_file, cohorts)
    env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
    with log.open("w") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for_vllm(port: int, process: subprocess.Popen, log: Path, limit: float = 600) -> None:
    """Until `/health` answers 200; the end of vLLM's log if it exits or never does."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vLLM exited early:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"vLLM not up in {limit:.0f} s:\n{log.read_text()[-4000:]}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
