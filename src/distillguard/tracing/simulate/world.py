"""The simulated provider: a clock, a population of accounts, and the requests they send.

Archetypes (archetypes.py) describe *who* sends what; this module holds the
shared machinery they use: when people and scripts send requests, where from,
with which client, and how one request is written out in the tracing contract.
"""

from __future__ import annotations

import math
import random
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime

from distillguard.tracing.simulate.corpus import Corpus, Prompt

START = datetime(2026, 11, 2, tzinfo=UTC).timestamp()  # a Monday
HOUR = 3600.0
DAY = 86_400.0
MODELS_BEFORE = ("dg-large-1", "dg-small-1")
NEW_MODEL = "dg-large-2"
HUMAN_AGENTS = (
    "openai-python/1.54.3",
    "OpenAI/NodeJS/4.68.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/130.0.0.0 Safari/537.36",
    "curl/8.5.0",
    "LangChain/0.3.7",
    "Cursor/0.42",
    "continue.dev/0.9",
)
SCRIPT_AGENTS = (
    "python-requests/2.32.3",
    "python-httpx/0.27.2",
    "aiohttp/3.10.10",
    "Go-http-client/2.0",
)
FIRST = [
    "anna",
    "ben",
    "chen",
    "david",
    "elena",
    "farid",
    "grace",
    "hiro",
    "ivan",
    "julia",
    "kofi",
    "lena",
    "mateo",
    "nora",
    "omar",
    "priya",
    "quinn",
    "rosa",
    "sven",
    "tara",
    "umar",
    "vera",
    "wei",
    "yusuf",
    "zoe",
]
LAST = [
    "smith",
    "garcia",
    "kim",
    "muller",
    "rossi",
    "silva",
    "novak",
    "tanaka",
    "okafor",
    "haddad",
    "berg",
    "costa",
    "dubois",
    "ivanova",
    "lopez",
    "wang",
    "patel",
    "jensen",
]
FREE_MAIL = ("gmail.com", "outlook.com", "yahoo.com", "icloud.com", "proton.me", "qq.com")
FOLLOW_UPS = (
    "Thanks. Can you make it shorter?",
    "Can you give me an example?",
    "Why is that?",
    "What about the edge cases?",
    "Could you rewrite that in a friendlier tone?",
    "That doesn't work for me, it throws an error. Any idea?",
    "Ok, and how would I test this?",
    "Can you explain the second part again?",
    "请再详细一点。",
    "Great, now translate it into Spanish.",
)


@dataclass
class World:
    corpus: Corpus
    rng: random.Random
    days: int = 7
    release_day: int = 4  # NEW_MODEL appears at 09:00 UTC that day
    accounts: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    labels: list[dict] = field(default_factory=list)
    _serial: int = 0

    @property
    def end(self) -> float:
        return START + self.days * DAY

    @property
    def release(self) -> float:
        return START + self.release_day * DAY + 9 * HOUR

    # -- who --------------------------------------------------------------------------

    def account(
        self,
        archetype: str,
        attacker: bool,
        actor: str,
        *,
        org: str | None = None,
        email: str | None = None,
        payment: str | None = None,
        signup_ip: str | None = None,
        created: float | None = None,
        country: str = "US",
    ) -> str:
        self._serial += 1
        account_id = f"acct_{self._serial:06d}"
        created = created if created is not None else START - self.rng.uniform(1, 400) * DAY
        self.accounts.append(
            {
                "account_id": account_id,
                "org_id": org,
                "created_at": _rfc3339(created),
                "email": email or self.human_email(),
                "payment_fingerprint": payment or self.token("pf_", 16),
                "country": country,
                "signup_ip": signup_ip or self.residential_ip(),
            }
        )
        label = "attacker" if attacker else "benign"
        self.labels.append(
            {"account_id": account_id, "label": label, "archetype": archetype, "actor": actor}
        )
        return account_id

    def token(self, prefix: str, n: int) -> str:
        return prefix + "".join(self.rng.choices("0123456789abcdef", k=n))

    def human_email(self, domain: str | None = None) -> str:
        first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
        local = self.rng.choice(
            [
                f"{first}.{last}",
                f"{first}{last}",
                f"{first[0]}{last}",
                f"{first}{self.rng.randint(1, 99)}",
            ]
        )
        return f"{local}@{domain or self.rng.choice(FREE_MAIL)}"

    def bot_email(self, domain: str, letters: int = 8, digits: int = 4) -> str:
        local = "".join(self.rng.choices(string.ascii_lowercase, k=letters))
        return f"{local}{self.rng.randint(10 ** (digits - 1), 10**digits - 1)}@{domain}"

    def residential_ip(self) -> str:
        r = self.rng
        first = r.choice([24, 67, 73, 86, 98, 109, 151, 176, 188, 201])
        return f"{first}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"

    def datacenter_pool(self, subnets: int = 1) -> list[str]:
        r = self.rng
        pools = []
        for _ in range(subnets):
            first = r.choice([34, 35, 45, 104, 138, 159, 167, 185, 192])
            base = f"{first}.{r.randint(0, 255)}.{r.randint(0, 255)}"
            pools += [f"{base}.{host}" for host in r.sample(range(2, 254), 16)]
        return pools

    # -- when -------------------------------------------------------------------------

    def human_times(self, n: int, tz_hours: int = 0, session_size: float = 4.0) -> list[float]:
        """`n` times in sessions on random days, in waking hours of the user's time zone."""
        r = self.rng
        times: list[float] = []
        while len(times) < n:
            day = r.randrange(self.days)
            weekend = (day % 7) >= 5
            if weekend and r.random() < 0.6:
                continue
            hour = min(max(r.gauss(14, 3.5), 7), 23.5) - tz_hours
            t = START + day * DAY + hour * HOUR
            for _ in range(max(1, int(r.expovariate(1 / session_size)) + 1)):
                if len(times) >= n or t >= self.end:
                    break
                times.append(t)
                t += r.lognormvariate(math.log(90), 1.0)  # reading, thinking, typing
        return sorted(times)

    def steady_times(
        self, n: int, start: float | None = None, end: float | None = None
    ) -> list[float]:
        """A script's Poisson arrivals between `start` and `end`, around the clock."""
        start = START if start is None else start
        end = self.end if end is None else end
        return sorted(self.rng.uniform(start, end) for _ in range(n))

    def nightly_times(self, n: int, hour_from: float = 1, hours: float = 3) -> list[float]:
        """A batch job: every night in a window, at a steady clip."""
        per_night = max(1, n // self.days)
        times = []
        for day in range(self.days):
            begin = START + day * DAY + hour_from * HOUR
            times += [
                begin + (i + self.rng.random()) * hours * HOUR / per_night for i in range(per_night)
            ]
        return sorted(times[:n])

    def model_at(self, ts: float, pivots: bool, adopt: float = 0.3) -> str:
        """Which model a request names; pivoting actors move to the new model on release day."""
        if ts >= self.release:
            if pivots and ts >= self.release + self.rng.uniform(1, 12) * HOUR:
                return NEW_MODEL
            if not pivots and self.rng.random() < adopt * min(1.0, (ts - self.release) / (2 * DAY)):
                return NEW_MODEL
        return MODELS_BEFORE[0] if self.rng.random() < 0.75 else MODELS_BEFORE[1]

    # -- what -------------------------------------------------------------------------

    def pick(self, pool: str) -> Prompt:
        return self.rng.choice(self.corpus.pool(pool))

    def request(
        self,
        account_id: str,
        ts: float,
        turns: list[str],
        *,
        ip: str,
        agent: str,
        org: str | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        answer_tokens: int = 300,
        conversation: str | None = None,
        system: str | None = None,
        endpoint: str = "/chat/completions",
        logits: dict | None = None,
    ) -> None:
        """Append one event: `turns` are the user messages so far (the last is new); on
        `/completions` the last turn is the whole prompt. `logits`: the logit channel's
        fields the client sets (`{"logprobs": 5, "echo": True}`)."""
        if endpoint == "/completions":
            asked: dict = {"prompt": turns[-1]}
            prompt_tokens = len(turns[-1]) // 4 + 1
        else:
            messages: list[dict] = [{"role": "system", "content": system}] if system else []
            for i, turn in enumerate(turns):
                messages.append({"role": "user", "content": turn})
                if i < len(turns) - 1:
                    messages.append({"role": "assistant", "content": _reply(turn, 60)})
            asked = {"messages": messages}
            prompt_tokens = sum(len(m["content"]) for m in messages) // 4 + 4 * len(messages)
        if max_tokens is not None:
            answer_tokens = min(answer_tokens, max_tokens)
        self.events.append(
            {
                "ts": _rfc3339(ts),
                "request_id": self.token("req_", 24),
                "account_id": account_id,
                "org_id": org,
                "ip": ip,
                "user_agent": agent,
                "model": model or self.model_at(ts, pivots=False),
                "endpoint": endpoint,
                **asked,
                "max_tokens": max_tokens,
                "temperature": temperature,
                "response_text": _reply(turns[-1], answer_tokens),
                "prompt_tokens": prompt_tokens,
                "completion_tokens": answer_tokens,
                "status": 200,
                "latency_ms": round(answer_tokens * 12 + self.rng.uniform(80, 400), 1),
                "conversation_id": conversation,
                **(logits or {}),
            }
        )


def _reply(question: str, tokens: int) -> str:
    """A synthetic answer: its length stands for the real one's (kept short on disk)."""
    words = question.split()[:12] or ["ok"]
    return f"[{tokens} tokens] " + " ".join(words)


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
