"""Faults, side by side in one run: what the gateway answers, records and leaks when things break.

Every scenario runs the real `distillguard serve` (the console script) in front of the
fake upstream (tests/fake_upstream.py), with a SQLite store of its own in a temporary
directory and, where it says so, a private `redis-server`, all on 127.0.0.1. A load
generator (a few httpx async clients, paced to a fixed rate, one thread) sends small chat
completions with a valid key; every response is matched to its event by `x-request-id`.

* **redis-restart** — `--redis`: Redis is SIGKILLed under load, restarted on the same port
  a few seconds later, and the load goes on. Target: only 503 `limiter_unavailable` while
  it is down (no 500s), each with its event; no lease left in Redis afterwards.
* **store-stall** — in-process limits: another connection holds `BEGIN EXCLUSIVE` on the
  SQLite store (WAL mode still lets it block writers) for 15 s under load. Target: peak RSS
  at most 2x idle at the default queue bound; every answered request has its event once
  the store is free again (checked while the gateway still runs, then after it stops).
  Two variants with bigger bodies (the extra bytes in `metadata`, never tokenised):
  **store-stall-48k**, a 48 KiB string each, so the queue's byte bound (64 MiB) is
  reached during the stall (events past it are dropped and counted, by design), and
  **store-stall-8k-objects**, 8 KiB of empty JSON objects (`[{}, {}, …]`) each: few
  bytes on the wire and in the queue's estimate, many once decoded.
* **sigterm-long-streams** — `--redis`, `shutdown_grace_seconds = 3`: eight ~10 s streams
  (`slow-2`) and light load, then SIGTERM mid-stream. Target: every request that got a
  response (streams cut by the shutdown included) has its event; no lease left in Redis.
* **sigkill** — in-process limits: SIGKILL under load. Reported: answered requests without
  an event, against the load's rate (the writer lingers 50 ms per batch, so about one
  linger window's worth may be lost).

Leases left = members of the `dg:s:*` sorted sets whose score (the lease's expiry) is
still in the future by Redis' own clock. RSS is the gateway's VmRSS, sampled every 50 ms
in a thread; idle is after a warm-up, before the fault. Every scenario is bounded in time
and every process started here is stopped on the way out, errors included.

    .venv/bin/python benchmarks/faults.py            # ~2.5 min
    .venv/bin/python benchmarks/faults.py --quick    # shorter phases, ~2 min
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx

from common import ROOT, save

sys.path.insert(0, str(ROOT))  # the tests' fake upstream and helpers
from tests.servers import find_binary, free_port

from distillguard.policy import MAX_LIMIT, Limits
from distillguard.store import AccountStore, EventStore, open_engine

FAKE_UPSTREAM = ROOT / "tests" / "fake_upstream.py"
VENV_EXE = ROOT / ".venv" / "bin" / "distillguard"
EXE = str(VENV_EXE if VENV_EXE.exists() else Path(sys.executable).parent / "distillguard")
BODY = {
    "model": "fake-model",
    "messages": [{"role": "user", "content": "What is six times seven? Answer in one line."}],
    "max_tokens": 16,
}
STREAM_BODY = {**BODY, "model": "slow-2", "stream": True}  # a word every 2 s: ~12 s in all
# Never refuse during a scenario (so a refusal is a fault's doing), but check every limit.
LIMITS = Limits(rpm=10_000_000, tpm=1_000_000_000, tpd=MAX_LIMIT["tpd"], concurrency=10_000)
LINGER_SECONDS = 0.05  # the event writer's linger per batch (gateway/events.py)
PROCESSES: list[subprocess.Popen] = []  # everything started here, stopped in main's finally


# -- processes -------------------------------------------------------------------------------


def spawn(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT
        )
    PROCESSES.append(proc)
    return proc


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def wait_until(ready, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} during startup")
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s")


def start_upstream(workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = spawn([sys.executable, str(FAKE_UPSTREAM), str(port)], workdir / "upstream.log")
    base = f"http://127.0.0.1:{port}/v1"
    wait_until(lambda: httpx.get(base + "/models", timeout=1).status_code == 200, proc, "upstream")
    return proc, base


def start_redis(port: int, workdir: Path) -> subprocess.Popen:
    import redis

    cmd = [find_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1"]
    cmd += ["--dir", str(workdir), "--save", "", "--appendonly", "no", "--daemonize", "no"]
    proc = spawn(cmd, workdir / f"redis-{port}.log")

    def ready() -> bool:
        with redis.Redis(port=port, socket_connect_timeout=1) as client:
            return bool(client.ping())

    wait_until(ready, proc, "redis-server", timeout=20)
    return proc


@dataclass
class Gateway:
    proc: subprocess.Popen
    base: str  # http://127.0.0.1:PORT
    store: str  # sqlite:///…
    db: Path
    key: str
    log: Path

    @property
    def chat(self) -> str:
        return self.base + "/v1/chat/completions"

    def tracebacks(self) -> int:
        return self.log.read_text(errors="replace").count("Traceback")

    def log_lines(self) -> int:
        return len(self.log.read_text(errors="replace").splitlines())

    def log_head(self, lines: int = 40) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()[:lines]

    def log_tail(self, lines: int = 15) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()[-lines:]


def start_gateway(
    name: str, workdir: Path, upstream: str, redis_url: str | None = None, env: dict | None = None
) -> Gateway:
    db = workdir / f"{name}.db"
    store = f"sqlite:///{db}"
    engine = open_engine(store)
    accounts = AccountStore(engine)
    issued = accounts.issue_key(f"{name}-account", f"{name}-org", LIMITS)
    accounts.set_limits("account", f"{name}-account", LIMITS)
    accounts.set_limits("org", f"{name}-org", LIMITS)
    engine.dispose()
    port = free_port()
    cmd = [EXE, "serve", "--upstream", upstream, "--port", str(port), "--store", store]
    if redis_url:
        cmd += ["--redis", redis_url]
    log = workdir / f"{name}.gateway.log"
    proc = spawn(cmd, log, {"HF_HUB_OFFLINE": "1", **(env or {})})
    gw = Gateway(proc, f"http://127.0.0.1:{port}", store, db, issued.api_key, log)
    headers = {"authorization": f"Bearer {gw.key}"}
    wait_until(
        lambda: httpx.post(gw.chat, json=BODY, headers=headers, timeout=5).status_code == 200,
        proc,
        f"gateway {name}",
    )
    return gw


# -- measuring -------------------------------------------------------------------------------


class RssSampler:
    """VmRSS of one process every `interval` s, in a thread, until stopped or it exits."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []  # (monotonic, KiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            kib = rss_kib(self.pid)
            if kib is None:
                return
            self.samples.append((time.monotonic(), kib))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def peak(self, since: float) -> int | None:
        return max((kib for t, kib in self.samples if t >= since), default=None)


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return None


def metric(gw: Gateway, name: str) -> float | None:
    try:
        text = httpx.get(gw.base + "/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def event_count(db: Path) -> int | None:
    """Rows in `events`, read from a read-only connection (never takes a write lock)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as c:
            return c.execute("SELECT count(*) FROM events").fetchone()[0]
    except sqlite3.Error:
        return None


def read_events(store: str) -> dict[str, dict]:
    engine = open_engine(store)
    try:
        return {
            row["request_id"]: {"status": row["status"], "decision": row["decision"]}
            for row in EventStore(engine).read()
        }
    finally:
        engine.dispose()


def leases_left(port: int) -> int:
    """Leases still held: `dg:s:*` members whose expiry is in the future (Redis' clock)."""
    import redis

    with redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2) as client:
        seconds, micros = client.time()
        now_us = seconds * 1_000_000 + micros
        return sum(
            client.zcount(key, f"({now_us}", "+inf")
            for key in client.scan_iter("dg:s:*", count=1000)
            if client.type(key) == b"zset"
        )


# -- load ------------------------------------------------------------------------------------


@dataclass
class Result:
    kind: str  # chat | stream
    sent: float  # monotonic
    done: float | None = None  # response (headers, for streams) or failure
    status: int | None = None  # None: no response at all
    request_id: str | None = None
    code: str | None = None  # the error code of an error answer
    error: str | None = None  # the exception that ended it, if any
    ended: float | None = None  # streams: the last byte or the failure
    chunks: int = 0  # streams: data lines received


class Load:
    """`concurrency` clients in one asyncio loop (its own thread), together paced to `rate`
    requests a second; stops on `stop()` or after `max_seconds`, whatever comes first."""

    def __init__(
        self,
        gw: Gateway,
        rate: float,
        concurrency: int = 6,
        max_seconds: float = 60,
        body: dict = BODY,
    ) -> None:
        self.gw, self.rate, self.concurrency, self.max_seconds = gw, rate, concurrency, max_seconds
        self.content = json.dumps(body, separators=(",", ":")).encode()
        self.results: list[Result] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def start(self) -> Load:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def stop(self, timeout: float = 20) -> list[Result]:
        self._stop.set()
        self._thread.join(timeout)
        return self.results

    async def _main(self) -> None:
        headers = {"authorization": f"Bearer {self.gw.key}", "content-type": "application/json"}
        limits = httpx.Limits(max_connections=self.concurrency)
        timeout = httpx.Timeout(10.0, connect=2.0)
        async with httpx.AsyncClient(headers=headers, limits=limits, timeout=timeout) as client:
            await asyncio.gather(*(self._client(client, i) for i in range(self.concurrency)))

    async def _client(self, client: httpx.AsyncClient, i: int) -> None:
        interval = self.concurrency / self.rate
        deadline = self.started + self.max_seconds
        at = self.started + i * interval / self.concurrency
        while not self._stop.is_set() and time.monotonic() < deadline:
            delay = at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            at = max(at + interval, time.monotonic() - interval)  # no catch-up burst
            result = Result("chat", time.monotonic())
            self.results.append(result)
            try:
                response = await client.post(self.gw.chat, content=self.content)
                result.done = time.monotonic()
                result.status = response.status_code
                result.request_id = response.headers.get("x-request-id")
                if response.status_code != 200:
                    with contextlib.suppress(Exception):
                        result.code = response.json()["error"]["code"]
            except httpx.HTTPError as exc:
                result.done = time.monotonic()
                result.error = type(exc).__name__


def stream_once(gw: Gateway, result: Result) -> None:
    """One streamed chat completion, read to its end (or its failure), into `result`."""
    headers = {"authorization": f"Bearer {gw.key}"}
    try:
        with httpx.stream(
            "POST", gw.chat, json=STREAM_BODY, headers=headers, timeout=httpx.Timeout(30, connect=2)
        ) as response:
            result.done = time.monotonic()
            result.status = response.status_code
            result.request_id = response.headers.get("x-request-id")
            for line in response.iter_lines():
                if line.startswith("data:"):
                    result.chunks += 1
    except httpx.HTTPError as exc:
        result.error = type(exc).__name__
    finally:
        result.ended = time.monotonic()
        if result.done is None:
            result.done = result.ended


# -- reporting -------------------------------------------------------------------------------


def statuses(results: list[Result]) -> dict[str, int]:
    counted = Counter(
        str(r.status) if r.code is None else f"{r.status} {r.code}"
        for r in results
        if r.status is not None
    )
    return dict(sorted(counted.items()))


def row(
    name: str,
    gw: Gateway,
    results: list[Result],
    stored: dict[str, dict],
    leases: int | None,
    idle_kib: int | None,
    peak_kib: int | None,
) -> dict:
    answered = [r for r in results if r.status is not None]
    ids = {r.request_id for r in results if r.request_id}
    missing = [r for r in answered if r.request_id not in stored]
    return {
        "scenario": name,
        "sent": len(results),
        "answered": len(answered),
        "answered_by_status": statuses(results),
        "not_answered": dict(Counter(r.error for r in results if r.status is None)),
        "without_request_id": sum(1 for r in answered if not r.request_id),
        "events_stored": len(ids & set(stored)),
        "answered_without_event": len(missing),
        "leases_left": leases,
        "idle_rss_mib": None if idle_kib is None else round(idle_kib / 1024, 1),
        "peak_rss_mib": None if peak_kib is None else round(peak_kib / 1024, 1),
        "gateway_tracebacks": gw.tracebacks(),
        "gateway_log_lines": gw.log_lines(),
        "gateway_log_head": gw.log_head(),
        "gateway_log_tail": gw.log_tail(),
    }


def warm_up(
    gw: Gateway, rate: float, seconds: float, sampler: RssSampler, body: dict = BODY
) -> int | None:
    """Load for `seconds`, a second of quiet, then the idle RSS."""
    load = Load(gw, rate, max_seconds=seconds + 5, body=body).start()
    time.sleep(seconds)
    load.stop()
    time.sleep(1.0)
    return rss_kib(gw.proc.pid) or (sampler.samples[-1][1] if sampler.samples else None)


def rate_of(results: list[Result], since: float, until: float) -> float:
    n = sum(1 for r in results if r.done is not None and since <= r.done < until)
    return n / max(until - since, 1e-9)


# -- scenarios -------------------------------------------------------------------------------


def redis_restart(workdir: Path, upstream: str, phases: dict, rate: float) -> dict:
    port = free_port()
    redis = start_redis(port, workdir)
    try:
        gw = start_gateway("redis-restart", workdir, upstream, f"redis://127.0.0.1:{port}/0")
        try:
            with RssSampler(gw.proc.pid) as sampler:
                idle = warm_up(gw, rate, phases["warm"], sampler)
                load = Load(gw, rate).start()
                time.sleep(phases["before"])
                killed = time.monotonic()
                stop(redis, signal.SIGKILL, timeout=5)
                time.sleep(phases["outage"])
                restarting = time.monotonic()
                redis = start_redis(port, workdir)
                restarted = time.monotonic()  # answering PING
                time.sleep(phases["after"])
                results = load.stop()
                time.sleep(0.5)  # every request finished: settles done
                leases = leases_left(port)
                peak = sampler.peak(load.started)
            exit_code = stop(gw.proc)
        finally:
            stop(gw.proc)
    finally:
        stop(redis)
    stored = read_events(gw.store)
    during = [r for r in results if r.done is not None and killed <= r.done < restarting]
    between = [r for r in results if r.done is not None and restarting <= r.done < restarted]
    after = [r for r in results if r.done is not None and r.done >= restarted]
    first_ok = next((r.done for r in sorted(after, key=lambda r: r.done) if r.status == 200), None)
    out = row("redis-restart", gw, results, stored, leases, idle, peak)
    out |= {
        "rate": rate_of(results, load.started, killed),
        "outage_seconds": restarting - killed,
        "restart_seconds": restarted - restarting,
        "while_restarting_by_status": statuses(between),
        "last_200_after_kill_ms": max(
            (round((r.done - killed) * 1000, 1) for r in during if r.status == 200), default=None
        ),
        "during_outage_by_status": statuses(during),
        "during_outage_without_event": sum(
            1 for r in during if r.status is not None and r.request_id not in stored
        ),
        "status_500": sum(1 for r in results if r.status == 500),
        "first_200_after_restart_s": None if first_ok is None else first_ok - restarted,
        "after_restart_by_status": statuses(after),
        "gateway_exit_code": exit_code,
    }
    return out


def store_stall(
    workdir: Path,
    upstream: str,
    phases: dict,
    rate: float,
    body_kib: int = 0,
    objects: bool = False,
) -> dict:
    """The store locked under load. With `body_kib`, bodies that much bigger: one long
    string (so that the queue's byte bound, 64 MiB by default, is reached during the
    stall), or with `objects` as many empty JSON objects as fit (`[{}, {}, …]`: the same
    bytes on the wire, many more in memory once decoded). The bytes ride in `metadata`,
    kept in the event like the rest of the body and never tokenised, so the gateway keeps
    the rate on this 2-core machine."""
    name = "store-stall"
    body = BODY
    if body_kib and objects:
        name = f"store-stall-{body_kib}k-objects"
        body = {**BODY, "metadata": {"n": [{}] * (body_kib * 1024 // 3)}}
    elif body_kib:
        name = f"store-stall-{body_kib}k"
        body = {**BODY, "metadata": {"note": "distillation " * (body_kib * 1024 // 13)}}
    gw = start_gateway(name, workdir, upstream)
    series: list[dict] = []
    try:
        with RssSampler(gw.proc.pid) as sampler:
            idle = warm_up(gw, rate, phases["warm"], sampler, body)
            load = Load(gw, rate, body=body).start()
            time.sleep(phases["before"])
            lock = sqlite3.connect(gw.db, timeout=10, isolation_level=None)
            try:
                lock.execute("BEGIN EXCLUSIVE")
                locked = time.monotonic()
                while time.monotonic() < locked + phases["stall"]:
                    series.append(
                        {
                            "t": round(time.monotonic() - locked, 2),
                            "events": event_count(gw.db),
                            "queue_depth": metric(gw, "distillguard_event_queue_depth"),
                            "rss_mib": round((rss_kib(gw.proc.pid) or 0) / 1024, 1),
                        }
                    )
                    time.sleep(1.0)
            finally:
                lock.execute("ROLLBACK")
                lock.close()
            released = time.monotonic()
            time.sleep(phases["after"])
            results = load.stop()
            peak = sampler.peak(load.started)
            # Caught up? Wait (bounded), the gateway running, until every answer's event is
            # there, or the queue is empty and nothing more arrives (events it dropped).
            answered_ids = {r.request_id for r in results if r.request_id}
            caught_up_at, running, last = None, {}, -1
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                running = read_events(gw.store)
                drained = metric(gw, "distillguard_event_queue_depth") == 0
                if answered_ids <= set(running) or (drained and len(running) == last):
                    caught_up_at = time.monotonic()
                    break
                last = len(running) if drained else -1
                time.sleep(0.5)
            queue_depth_max = max((s["queue_depth"] or 0 for s in series), default=None)
            dropped = metric(gw, "distillguard_events_dropped_total")
            write_errors = metric(gw, "distillguard_event_write_errors_total")
        missing_running = sum(
            1 for r in results if r.status is not None and r.request_id not in running
        )
        exit_code = stop(gw.proc)
    finally:
        stop(gw.proc)
    stored = read_events(gw.store)
    out = row(name, gw, results, stored, None, idle, peak)
    counts = [s["events"] for s in series if s["events"] is not None]
    out |= {
        "rate": rate_of(results, load.started, locked),
        "stall_seconds": released - locked,
        "events_during_stall": (counts[0], counts[-1]) if counts else None,
        "queue_depth_max": queue_depth_max,
        "events_dropped_metric": dropped,
        "event_write_errors_metric": write_errors,
        "answered_without_event_while_running": missing_running,
        "caught_up_s_after_release": None if caught_up_at is None else caught_up_at - released,
        "peak_over_idle": None if not (idle and peak) else round(peak / idle, 3),
        "series": series,
        "gateway_exit_code": exit_code,
    }
    return out


def sigterm_long_streams(workdir: Path, upstream: str, phases: dict, rate: float) -> dict:
    port = free_port()
    redis = start_redis(port, workdir)
    env = {"DISTILLGUARD_GATEWAY__SHUTDOWN_GRACE_SECONDS": "3"}
    try:
        gw = start_gateway("sigterm", workdir, upstream, f"redis://127.0.0.1:{port}/0", env)
        try:
            with RssSampler(gw.proc.pid) as sampler:
                idle = warm_up(gw, rate, phases["warm"], sampler)
                load = Load(gw, phases["light_rate"], concurrency=2).start()
                streams = [Result("stream", time.monotonic()) for _ in range(phases["streams"])]
                threads = [
                    threading.Thread(target=stream_once, args=(gw, s), daemon=True) for s in streams
                ]
                for thread in threads:
                    thread.start()
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and any(s.done is None for s in streams):
                    time.sleep(0.1)
                time.sleep(1.0)  # mid-stream: each has a word or two, ~8 s to go
                termed = time.monotonic()
                gw.proc.send_signal(signal.SIGTERM)
                exit_code = gw.proc.wait(timeout=60)
                exited = time.monotonic()
                results = load.stop()
                for thread in threads:
                    thread.join(20)
                peak = sampler.peak(load.started)
            leases = leases_left(port)
        finally:
            stop(gw.proc)
    finally:
        stop(redis)
    stored = read_events(gw.store)
    everything = results + streams
    out = row("sigterm-long-streams", gw, everything, stored, leases, idle, peak)
    out |= {
        "rate": rate_of(results, load.started, termed),
        "exit_s_after_sigterm": exited - termed,
        "gateway_exit_code": exit_code,
        "streams": [
            {
                "status": s.status,
                "chunks": s.chunks,
                "error": s.error,
                "seconds": None if s.ended is None else round(s.ended - s.sent, 2),
                "event": stored.get(s.request_id or ""),
            }
            for s in streams
        ],
        "light_load_by_status": statuses(results),
    }
    return out


def sigkill(workdir: Path, upstream: str, phases: dict, rate: float) -> dict:
    gw = start_gateway("sigkill", workdir, upstream)
    try:
        with RssSampler(gw.proc.pid) as sampler:
            idle = warm_up(gw, rate, phases["warm"], sampler)
            load = Load(gw, rate).start()
            time.sleep(phases["before"])
            killed = time.monotonic()
            gw.proc.send_signal(signal.SIGKILL)
            gw.proc.wait(timeout=10)
            time.sleep(0.5)
            results = load.stop()
            peak = sampler.peak(load.started)
    finally:
        stop(gw.proc)
    stored = read_events(gw.store)
    out = row("sigkill", gw, results, stored, None, idle, peak)
    missing = [r for r in results if r.status is not None and r.request_id not in stored]
    ages = sorted(killed - r.done for r in missing if r.done is not None)
    window = [r for r in results if r.status is not None and killed - 0.1 <= r.done <= killed]
    out |= {
        "rate": rate_of(results, load.started + 1, killed),
        "answered_in_last_50ms": sum(1 for r in window if r.done >= killed - 0.05),
        "answered_in_last_100ms": len(window),
        "missing_answered_ms_before_kill": {
            "newest": None if not ages else round(ages[0] * 1000, 1),
            "oldest": None if not ages else round(ages[-1] * 1000, 1),
        },
        "events_without_answer": sum(
            1 for r in results if r.status is None and r.request_id in stored
        ),
        "gateway_exit_code": gw.proc.returncode,
    }
    return out


SCENARIOS = {
    "redis-restart": redis_restart,
    "store-stall": store_stall,
    "store-stall-48k": functools.partial(store_stall, body_kib=48),
    "store-stall-8k-objects": functools.partial(store_stall, body_kib=8, objects=True),
    "sigterm-long-streams": sigterm_long_streams,
    "sigkill": sigkill,
}
PHASES = {
    "default": {
        "warm": 3, "before": 3, "outage": 5, "after": 4, "stall": 15,
        "streams": 8, "light_rate": 40,
    },
    "quick": {
        "warm": 2, "before": 2, "outage": 3, "after": 3, "stall": 8,
        "streams": 8, "light_rate": 40,
    },
}  # fmt: skip


# -- main ------------------------------------------------------------------------------------


def mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def table(rows: list[dict]) -> str:
    lines = [
        "| scenario | sent | answered (by status) | events stored | answered w/o event "
        "| leases left | RSS idle → peak (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        by = ", ".join(f"{k}: {v:,}" for k, v in r["answered_by_status"].items())
        leases = "n/a" if r["leases_left"] is None else f"{r['leases_left']:,}"
        lines.append(
            f"| {r['scenario']} | {r['sent']:,} | {r['answered']:,} ({by}) | "
            f"{r['events_stored']:,} | {r['answered_without_event']:,} | {leases} | "
            f"{mib(r['idle_rss_mib'])} → {mib(r['peak_rss_mib'])} |"
        )
    return "\n".join(lines)


def targets(rows: dict[str, dict]) -> list[str]:
    lines = []

    def say(ok: bool, text: str) -> None:
        lines.append(f"{'MET' if ok else 'NOT MET'}: {text}")

    if r := rows.get("redis-restart"):
        during = r["during_outage_by_status"]
        bad = {k: v for k, v in during.items() if k not in ("503 limiter_unavailable", "200")}
        say(
            not bad and r["status_500"] == 0 and r["during_outage_without_event"] == 0,
            f"redis-restart: outage answers {during} (200s: admitted before the kill), "
            f"{r['status_500']} 500s, {r['during_outage_without_event']} without an event",
        )
        say(r["leases_left"] == 0, f"redis-restart: {r['leases_left']} leases left")
    for name in ("store-stall", "store-stall-48k", "store-stall-8k-objects"):
        if not (r := rows.get(name)):
            continue
        say(
            r["peak_over_idle"] is not None and r["peak_over_idle"] <= 2,
            f"{name}: peak RSS {r['peak_rss_mib']} MiB = {r['peak_over_idle']} x idle "
            f"{r['idle_rss_mib']} MiB (queue depth up to {r['queue_depth_max']})",
        )
        say(
            r["answered_without_event"] == 0 and r["answered_without_event_while_running"] == 0,
            f"{name}: {r['answered_without_event_while_running']} answered without an event "
            f"after the stall (running), {r['answered_without_event']} after the stop "
            f"(events dropped by the gateway's count: {r['events_dropped_metric']}); "
            f"events stored during the stall {r['events_during_stall']}",
        )
    if r := rows.get("sigterm-long-streams"):
        say(
            r["answered_without_event"] == 0,
            f"sigterm-long-streams: {r['answered_without_event']} answered without an event",
        )
        say(r["leases_left"] == 0, f"sigterm-long-streams: {r['leases_left']} leases left")
    if r := rows.get("sigkill"):
        window = max(r["answered_in_last_100ms"], 1)
        say(
            r["answered_without_event"] <= window,
            f"sigkill: {r['answered_without_event']} answered without an event at "
            f"{r['rate']:.0f} req/s ({r['answered_in_last_50ms']} answered in the last 50 ms, "
            f"{r['answered_in_last_100ms']} in the last 100 ms; missing ones answered "
            f"{r['missing_answered_ms_before_kill']} ms before the kill)",
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter phases")
    parser.add_argument("--rate", type=float, default=200, help="load, requests/s")
    parser.add_argument("--only", nargs="*", choices=list(SCENARIOS), help="a subset")
    args = parser.parse_args()
    phases = PHASES["quick" if args.quick else "default"]
    chosen = args.only or list(SCENARIOS)
    rows: dict[str, dict] = {}
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="dg-faults-") as tmp:
            workdir = Path(tmp)
            _, upstream = start_upstream(workdir)
            for name in chosen:
                print(f"-- {name}", flush=True)
                try:
                    rows[name] = SCENARIOS[name](workdir, upstream, phases, args.rate)
                except Exception as exc:  # report it, run the others
                    rows[name] = {"scenario": name, "failed": f"{type(exc).__name__}: {exc}"}
                    print(f"   failed: {rows[name]['failed']}", flush=True)
                    continue
                shown = {
                    k: v
                    for k, v in rows[name].items()
                    if not k.startswith(("series", "gateway_log_"))
                }
                print(f"   {shown}", flush=True)
    finally:
        for proc in PROCESSES:
            stop(proc, timeout=10)
    done = [r for r in rows.values() if "failed" not in r]
    print("\n" + table(done))
    verdicts = targets({r["scenario"]: r for r in done})
    print("\n" + "\n".join(verdicts))
    for r in rows.values():
        if "failed" in r:
            print(f"FAILED TO RUN: {r['scenario']}: {r['failed']}")
    result = {
        "settings": {"quick": args.quick, "rate": args.rate, "phases": phases},
        "seconds": round(time.monotonic() - started, 1),
        "scenarios": rows,
        "targets": verdicts,
    }
    print(f"wrote {save('faults', result)}")


if __name__ == "__main__":
    main()
