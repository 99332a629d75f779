"""Open-loop load at a fixed Poisson rate: the latency a server adds, free of coordinated omission.

    python benchmarks/openloop.py URL KEY RATE SECONDS BODY_JSON

Requests are sent at exponentially spaced times whether or not earlier ones
have finished (wrk and hey wait, and so hide a slow server's queue), and each
latency is measured from the request's *scheduled* time. Prints one JSON line:
requests, statuses, and latency percentiles in milliseconds. Runs in its own
process so that the server under test never shares an event loop with it.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import Counter

import aiohttp


async def main(url: str, key: str, rate: float, seconds: float, body: bytes) -> dict:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(limit=0)  # never queue in the client
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one(scheduled: float) -> None:
            try:
                async with session.post(url, data=body) as response:
                    await response.read()
                    statuses[str(response.status)] += 1
            except aiohttp.ClientError as exc:
                statuses[type(exc).__name__] += 1
            latencies.append(time.perf_counter() - scheduled)

        for _ in range(20):  # warm the connection pool
            await one(time.perf_counter())
        latencies.clear()
        statuses.clear()
        rng = random.Random(0)
        start = time.perf_counter()
        at, tasks = start, []
        while at < start + seconds:
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(at)))
            at += rng.expovariate(rate)
        await asyncio.gather(*tasks)
    latencies.sort()

    def pct(q: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return {
        "requests": len(latencies),
        "statuses": dict(statuses),
        "rate": rate,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": 1000 * latencies[-1],
    }


if __name__ == "__main__":
    url, key, rate, seconds, body = sys.argv[1:6]
    import uvloop  # the client's own overhead, kept small (uvicorn[standard] ships it)

    result = uvloop.run(main(url, key, float(rate), float(seconds), body.encode()))
    print(json.dumps(result))
