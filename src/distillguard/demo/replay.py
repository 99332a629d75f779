"""Replaying simulated traffic through a real gateway, on a compressed clock.

Each simulated request is sent at its own moment, `speedup` times sooner, with the
client's address in `X-Forwarded-For` (the demo's gateway trusts loopback as its proxy)
and its user agent, so tracing sees what it would see in production. The answer's length
the simulator chose travels in `metadata` for the synthetic backend; `max_tokens` stays
what the client asked.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import msgspec

IN_FLIGHT = 48
RETRIES = 2
FIELDS = ("model", "messages", "prompt", "max_tokens", "temperature", "logprobs", "top_logprobs")
FIELDS += ("echo", "prompt_logprobs", "n", "seed")


def timestamp(event: Mapping[str, Any]) -> float:
    return datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()


def body(event: Mapping[str, Any]) -> dict[str, Any]:
    sent = {name: event[name] for name in FIELDS if event.get(name) is not None}
    sent["metadata"] = {"answer_tokens": str(event.get("completion_tokens") or 256)}
    return sent


@dataclass
class Replayed:
    """What each account got back: HTTP status -> count (0: no answer)."""

    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    late: float = 0.0  # how far behind its schedule the last request went out

    def served(self, account: str) -> int:
        return self.statuses[account][200]

    def refused(self, account: str) -> int:
        return sum(n for status, n in self.statuses[account].items() if status in (403, 429))

    def total(self, account: str) -> int:
        return sum(self.statuses[account].values())


async def _replay(
    url: str,
    keys: Mapping[str, str],
    events: Sequence[Mapping[str, Any]],
    speedup: float,
    progress: Callable[[int], None],
) -> Replayed:
    done = Replayed()
    gate = asyncio.Semaphore(IN_FLIGHT)
    start_sim = timestamp(events[0])
    # aiohttp, not httpx: on two cores the client's own cost per request sets the pace too.
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:

        async def send(event: Mapping[str, Any]) -> None:
            endpoint = event.get("endpoint") or "/chat/completions"
            headers = {
                "authorization": f"Bearer {keys[event['account_id']]}",
                "content-type": "application/json",
                "x-forwarded-for": event.get("ip") or "127.0.0.1",
                "user-agent": event.get("user_agent") or "demo",
            }
            sent = msgspec.json.encode(body(event))
            status = 0  # counted as not served
            try:
                # A connection the server closed as it went idle fails before the request is
                # read; clients retry that (the openai SDK does, twice), and so does this.
                for _ in range(RETRIES + 1):
                    try:
                        async with client.post(url + endpoint, data=sent, headers=headers) as reply:
                            await reply.read()
                            status = reply.status
                        break
                    except aiohttp.ClientConnectionError:
                        continue
                    except (TimeoutError, aiohttp.ClientError):
                        break  # no answer in time, or a broken one: not served
            finally:
                gate.release()
            done.statuses[event["account_id"]][status] += 1
            progress(1)

        started = time.monotonic()
        tasks = []
        for event in events:
            due = started + (timestamp(event) - start_sim) / speedup
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                done.late = max(done.late, -wait)
            await gate.acquire()
            tasks.append(asyncio.create_task(send(event)))
        await asyncio.gather(*tasks)
    return done


def replay(
    url: str,
    keys: Mapping[str, str],
    events: Sequence[Mapping[str, Any]],
    speedup: float,
    progress: Callable[[int], None] = lambda n: None,
) -> Replayed:
    """Send `events` (time order) to the gateway at `url` (its /v1 root) with each account's
    key from `keys`; returns what each account got back."""
    return asyncio.run(_replay(url, keys, events, speedup, progress))
