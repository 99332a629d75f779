"""Gateway speed, side by side in one run: direct upstream vs distillguard vs LiteLLM's proxy.

Every target sits in front of the same fast fake upstream (tests/fake_upstream.py,
one uvicorn process) and is loaded from separate processes by C and Go load
generators, so Python measures nothing:

* **throughput** — `wrk` (C), 64 connections, closed loop: requests/s and the
  latency distribution at saturation;
* **latency** — `openloop.py` (aiohttp + uvloop, its own process), Poisson
  arrivals at a fixed rate below saturation, each latency measured from the
  request's scheduled time: what the gateway adds to a request (target
  p50 <= 1 ms, p99 <= 5 ms over direct).

Two floors run beside them, so the added latency can be read against what
any proxy costs here: nginx as a plain reverse proxy (one more hop, no work)
and `passthrough_proxy.py` (distillguard's own server and upstream client,
uvicorn + aiohttp, doing no work).

distillguard runs as `distillguard serve` with per-key, account and
organisation limits checked on every request and every request written to
the event log (SQLite) and seen by the online tracer: one process with
in-process limits, the same with online tracing off (what the tracer costs), and
`--workers 2` sharing limits through a real Redis (this machine has 2 cores;
one process uses one). LiteLLM runs as
`litellm --num_workers 1` in its own virtual environment with the equivalent
per-key rpm/tpm limits (a custom_auth hook: its virtual keys need a database
and Prisma binaries fetched at run time, which this machine cannot do).

Rounds alternate the targets (A B C A B C ...) so drift on a shared machine hits
all of them alike; the report takes the median over rounds. Set up wrk,
nginx and LiteLLM with scripts/bench-tools.sh, redis-server with scripts/services.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from common import ROOT, save

sys.path.insert(0, str(ROOT))  # the tests' fake upstream and private servers
from tests.servers import free_port, redis_server

from distillguard.policy import MAX_LIMIT, Limits
from distillguard.store import AccountStore, open_engine

FAKE_UPSTREAM = ROOT / "tests" / "fake_upstream.py"
OPENLOOP = Path(__file__).with_name("openloop.py")
PASSTHROUGH = Path(__file__).with_name("passthrough_proxy.py")
LITELLM_VENV = ROOT / ".bench" / "litellm"
BODY = {
    "model": "fake-model",
    "messages": [{"role": "user", "content": "What is six times seven? Answer in one line."}],
    "max_tokens": 16,
}
# Never refuse during the benchmark, but check every limit on every request.
LIMITS = Limits(rpm=10_000_000, tpm=1_000_000_000, tpd=MAX_LIMIT["tpd"], concurrency=10_000)
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""
LITELLM_AUTH = """
from fastapi import Request
from litellm.proxy._types import ProxyException, UserAPIKeyAuth

KEY, RPM, TPM = {key!r}, {rpm}, {tpm}


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    if api_key != KEY:
        raise ProxyException(message="invalid key", type="auth_error", param="api_key", code=401)
    return UserAPIKeyAuth(api_key="bench-key", rpm_limit=RPM, tpm_limit=TPM)
"""
LITELLM_CONFIG = """
model_list:
  - model_name: fake-model
    litellm_params:
      model: openai/fake-model
      api_base: {upstream}
      api_key: sk-upstream
general_settings:
  master_key: sk-master-unused
  custom_auth: litellm_auth.user_api_key_auth
litellm_settings:
  telemetry: false
"""
NGINX_CONFIG = """
daemon off;
worker_processes 1;
pid @PID@;
error_log stderr error;
events { worker_connections 4096; }
http {
    access_log off;
    upstream fake { server @UPSTREAM@; keepalive 128; }
    server {
        listen 127.0.0.1:@PORT@;
        location / {
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
"""


@dataclass
class Target:
    name: str
    url: str  # the chat completions URL
    key: str


def wait_ready(url: str, process: subprocess.Popen, headers: dict | None = None) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: server exited during startup")
        try:
            if httpx.post(url, json=BODY, headers=headers, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not ready in time")


@contextmanager
def process(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> Iterator:
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            cmd, env={**os.environ, **(env or {})}, cwd=cwd, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def upstream() -> Iterator[str]:
    port = free_port()
    with process([sys.executable, str(FAKE_UPSTREAM), str(port)]) as proc:
        base = f"http://127.0.0.1:{port}/v1"
        wait_ready(base + "/chat/completions", proc)
        yield base


@contextmanager
def nginx(upstream_url: str, workdir: Path) -> Iterator[Target | None]:
    """nginx as a plain reverse proxy: what one more hop costs when the proxy does no work."""
    exe = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if Path(p).exists()), None
    )
    if exe is None:
        print("nginx not installed: run scripts/bench-tools.sh", file=sys.stderr)
        yield None
        return
    port = free_port()
    upstream_host = upstream_url.split("//", 1)[1].split("/", 1)[0]
    config = workdir / "nginx.conf"
    config.write_text(
        NGINX_CONFIG.replace("@PID@", str(workdir / "nginx.pid"))
        .replace("@UPSTREAM@", upstream_host)
        .replace("@PORT@", str(port))
    )
    with process([exe, "-c", str(config), "-p", str(workdir)]) as proc:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        wait_ready(url, proc)
        yield Target("nginx (reverse proxy, no work)", url, "unused")


@contextmanager
def passthrough(upstream_url: str) -> Iterator[Target]:
    port = free_port()
    upstream_chat = upstream_url + "/chat/completions"
    with process([sys.executable, str(PASSTHROUGH), str(port), upstream_chat]) as proc:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        wait_ready(url, proc)
        yield Target("Python proxy, no work (uvicorn + aiohttp)", url, "unused")


@contextmanager
def distillguard(
    upstream_url: str,
    workdir: Path,
    redis: str | None,
    workers: int = 1,
    online: bool = True,
    source: Path | None = None,
) -> Iterator[Target]:
    """`distillguard serve` in front of `upstream_url`; `source`: run the code of another
    checkout's `src/` (gateway_ab.py compares two)."""
    tag = "" if source is None else f"-{abs(hash(source))}"
    store = f"sqlite:///{workdir / f'store-{workers}-{online}{tag}.db'}"
    accounts = AccountStore(open_engine(store))
    issued = accounts.issue_key("bench-account", "bench-org", LIMITS)
    accounts.set_limits("account", "bench-account", LIMITS)
    accounts.set_limits("org", "bench-org", LIMITS)
    port = free_port()
    exe = str(Path(sys.executable).parent / "distillguard")
    cmd = [exe, "serve", "--upstream", upstream_url, "--port", str(port), "--store", store]
    if redis:
        cmd += ["--redis", redis, "--workers", str(workers)]
    env = {"HF_HUB_OFFLINE": "1", "DISTILLGUARD_TRACING__ONLINE": str(online).lower()}
    if source is not None:
        env["PYTHONPATH"] = str(source / "src")
    with process(cmd, env=env) as proc:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        wait_ready(url, proc, {"authorization": f"Bearer {issued.api_key}"})
        name = f"distillguard, {workers} workers, Redis limits" if redis else "distillguard"
        yield Target(name if online else f"{name}, online tracing off", url, issued.api_key)


@contextmanager
def litellm(upstream_url: str, workdir: Path, venv: Path) -> Iterator[Target | None]:
    exe = venv / "bin" / "litellm"
    if not exe.exists():
        print(f"LiteLLM not installed in {venv}: run scripts/bench-tools.sh", file=sys.stderr)
        yield None
        return
    key = "sk-bench-key"
    (workdir / "litellm_auth.py").write_text(
        LITELLM_AUTH.format(key=key, rpm=LIMITS.rpm, tpm=LIMITS.tpm)
    )
    (workdir / "litellm.yaml").write_text(LITELLM_CONFIG.format(upstream=upstream_url))
    port = free_port()
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the price list
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
        "NO_DOCS": "True",
        "PYTHONPATH": str(workdir),
    }
    cmd = [str(exe), "--config", "litellm.yaml", "--port", str(port), "--num_workers", "1"]
    with process(cmd, env=env, cwd=workdir) as proc:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        wait_ready(url, proc, {"authorization": f"Bearer {key}"})
        yield Target("LiteLLM proxy", url, key)


def run_wrk(target: Target, seconds: int, connections: int, script: Path) -> dict:
    env = {**os.environ, "BENCH_KEY": target.key, "BENCH_BODY": json.dumps(BODY)}
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script)]
    out = subprocess.run([*cmd, target.url], env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def run_openloop(target: Target, seconds: int, rate: int) -> dict:
    cmd = [sys.executable, str(OPENLOOP), target.url, target.key, str(rate), str(seconds)]
    out = subprocess.run([*cmd, json.dumps(BODY)], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    result["failed"] = result["requests"] - result["statuses"].get("200", 0)
    return result


def median_of(runs: list[dict], field: str) -> float:
    return statistics.median(r[field] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rate", type=int, default=300, help="Poisson req/s for latency")
    parser.add_argument("--workers", type=int, default=2, help="of the Redis-backed gateway")
    parser.add_argument("--litellm-venv", type=Path, default=LITELLM_VENV)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("`wrk` not found: run scripts/bench-tools.sh")

    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dg-bench-")))
        script = workdir / "post.lua"
        script.write_text(WRK_SCRIPT)
        base = stack.enter_context(upstream())
        targets = [Target("direct (fake upstream)", base + "/chat/completions", "unused")]
        # Two floors: one more hop at no work (nginx), and the same Python stack at no work.
        floor = stack.enter_context(nginx(base, workdir))
        if floor is not None:
            targets.append(floor)
        targets.append(stack.enter_context(passthrough(base)))
        targets.append(stack.enter_context(distillguard(base, workdir, None)))
        # What the gateway's online tracer costs (it runs on the event writer thread).
        targets.append(stack.enter_context(distillguard(base, workdir, None, online=False)))
        redis_url = stack.enter_context(redis_server())
        targets.append(stack.enter_context(distillguard(base, workdir, redis_url, args.workers)))
        proxy = stack.enter_context(litellm(base, workdir, args.litellm_venv))
        if proxy is not None:
            targets.append(proxy)

        throughput: dict[str, list[dict]] = {t.name: [] for t in targets}
        latency: dict[str, list[dict]] = {t.name: [] for t in targets}
        for round_ in range(args.rounds):
            for target in targets:
                run_wrk(target, 2, args.connections, script)  # warm-up
                result = run_wrk(target, args.seconds, args.connections, script)
                throughput[target.name].append(result)
                print(f"round {round_} wrk {target.name}: {result}", flush=True)
            for target in targets:
                result = run_openloop(target, args.seconds, args.rate)
                latency[target.name].append(result)
                print(f"round {round_} open loop {target.name}: {result}", flush=True)

    report = {"settings": vars(args) | {"litellm_venv": str(args.litellm_venv)}, "targets": {}}
    for name in throughput:
        report["targets"][name] = {
            "throughput_rps": median_of(throughput[name], "rps"),
            "saturated_p50_ms": median_of(throughput[name], "p50_us") / 1000,
            "saturated_p99_ms": median_of(throughput[name], "p99_us") / 1000,
            "non_2xx": sum(r["non2xx"] + r["socket_errors"] for r in throughput[name]),
            "fixed_rate_p50_ms": median_of(latency[name], "p50_ms"),
            "fixed_rate_p99_ms": median_of(latency[name], "p99_ms"),
            "fixed_rate_failed": sum(r["failed"] for r in latency[name]),
            "runs": {"wrk": throughput[name], "open_loop": latency[name]},
        }
    direct = report["targets"][targets[0].name]
    print(
        "\n| target | req/s (64 conn.) | p50 / p99 at saturation | "
        f"p50 / p99 at {args.rate} req/s | added p50 / p99 | failed |"
    )
    print("|---|---|---|---|---|---|")
    for name, row in report["targets"].items():
        added = (
            f"{row['fixed_rate_p50_ms'] - direct['fixed_rate_p50_ms']:+.2f} / "
            f"{row['fixed_rate_p99_ms'] - direct['fixed_rate_p99_ms']:+.2f} ms"
        )
        print(
            f"| {name} | {row['throughput_rps']:,.0f} | {row['saturated_p50_ms']:.1f} / "
            f"{row['saturated_p99_ms']:.1f} ms | {row['fixed_rate_p50_ms']:.2f} / "
            f"{row['fixed_rate_p99_ms']:.2f} ms | {added} | "
            f"{row['non_2xx'] + row['fixed_rate_failed']} |"
        )
    print(f"wrote {save('gateway_bench', report)}")


if __name__ == "__main__":
    main()
