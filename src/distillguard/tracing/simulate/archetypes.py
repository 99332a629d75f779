"""Who sends traffic: benign users and distillers, each written from public descriptions.

Every archetype is a function `(world, actor) -> None` that registers its
account(s) and appends their requests. Benign ones include the heavy users a
detector must *not* punish (batch jobs, evaluation harnesses, aggregators);
attackers follow what providers have reported about real campaigns (bulk
harvesting, reasoning-trace elicitation, capability sweeps, hydra networks of
small accounts, attackers hidden in a reseller's key, human mimicry).
"""

from __future__ import annotations

from collections.abc import Callable

from distillguard.tracing.simulate.world import (
    DAY,
    FOLLOW_UPS,
    HOUR,
    HUMAN_AGENTS,
    MODELS_BEFORE,
    SCRIPT_AGENTS,
    START,
    World,
)

# -- reasoning requests a harvester writes around its questions ----------------------


def _cot_phrase(world: World) -> str:
    return world.pick("cot_phrases").turns[0]


def _with_cot(world: World, question: str) -> str:
    phrase = _cot_phrase(world)
    if "{question}" in phrase or "{answer}" in phrase:
        return phrase.replace("{question}", question).replace("{answer}", "42")
    return f"{question}\n\n{phrase}" if world.rng.random() < 0.7 else f"{phrase}\n\n{question}"


# Paraphrase kit for the human mimic: the same ask, never twice the same words.
_MIMIC_OPEN = (
    "Could you",
    "Can you please",
    "Would you mind",
    "I'd love it if you could",
    "Please",
)
_MIMIC_ASK = (
    "walk me through how you'd think about this",
    "explain your reasoning as you go",
    "show me the steps you take",
    "talk through your thought process",
    "lay out each step of the solution",
    "explain how you get to the answer",
)
_MIMIC_CLOSE = (
    "",
    " Thanks!",
    " I'm trying to learn this.",
    " No rush.",
    " It's for a study group.",
)

# Templates of capability sweeps: instructions around inputs drawn from the corpus.
# A legitimate batch job's instructions: labelling, extraction, routing, translation.
BATCH_TASKS = [
    "Classify the sentiment of this customer message as positive, negative or neutral. "
    "Reply with one word.\n\nMessage: {q}",
    "Extract the product names mentioned in the text below as a JSON list.\n\nText: {q}",
    "Which department should handle this ticket: billing, support, sales or legal? "
    "Answer with the department only.\n\nTicket: {q}",
    "Translate the following text into German. Output only the translation.\n\n{q}",
]
SWEEP_TEMPLATES = {
    "agentic_coding": (
        "code",
        "You are an autonomous software engineering agent. You can call the tools "
        "`read_file`, `write_file`, `run_tests` and `bash`. Plan the change, show every "
        "tool call as JSON, then give the final patch.\n\nTask: {q}",
    ),
    "tool_use": (
        "chat",
        "You have access to these tools: search(query), calculator(expression), "
        'calendar(date). For the request below, emit each tool call as {{"tool": ..., '
        '"args": ...}}, then answer.\n\nRequest: {q}',
    ),
    "math": (
        "math",
        'Solve the problem. Respond only with JSON {{"reasoning_steps": [...], '
        '"final_answer": ...}}.\n\nProblem: {q}',
    ),
}


# -- benign ---------------------------------------------------------------------------


def casual(world: World, actor: str) -> None:
    """Someone chatting now and then: a few conversations over the week."""
    r = world.rng
    zh = r.random() < 0.15
    account = world.account("casual", False, actor, country="CN" if zh else "US")
    n = int(r.paretovariate(1.3) * 4)
    _human_traffic(
        world, account, min(n, 120), pool="chat_zh" if zh else "chat", tz=8 if zh else -5
    )


def coding_power_user(world: World, actor: str) -> None:
    """A developer who lives in the API: many coding questions, follow-ups, work hours."""
    r = world.rng
    account = world.account("coding_power_user", False, actor)
    _human_traffic(
        world,
        account,
        r.randint(200, 1200),
        pool="code",
        tz=r.choice([-8, -5, 1, 5]),
        session=12.0,
        max_tokens=r.choice([None, 2048, 4096]),
        cot=0.04,
        pool_mix=0.2,
    )


def researcher(world: World, actor: str) -> None:
    """Asks for reasoning on purpose (studying the model), at human pace and volume."""
    r = world.rng
    account = world.account("researcher", False, actor)
    _human_traffic(
        world,
        account,
        r.randint(60, 600),
        pool=r.choice(["math", "eval", "chat"]),
        tz=r.choice([-5, 1, 8]),
        session=8.0,
        cot=0.6,
        max_tokens=2048,
    )


def batch_job(world: World, actor: str) -> None:
    """An enterprise pipeline: one fixed template, short answers, every night."""
    r = world.rng
    domain = f"{world.token('corp', 4)}.com"
    org = f"org_{actor}"
    account = world.account("batch_job", False, actor, org=org, email=f"pipelines@{domain}")
    task = r.choice(BATCH_TASKS)
    ips, agent = world.datacenter_pool(), r.choice(SCRIPT_AGENTS)
    for ts in world.nightly_times(r.randint(600, 3000), hour_from=r.uniform(0, 4)):
        q = world.pick("chat").turns[0][:400]
        world.request(
            account,
            ts,
            [task.format(q=q)],
            ip=r.choice(ips),
            agent=agent,
            org=org,
            max_tokens=r.choice([8, 16, 64]),
            temperature=0.0,
            answer_tokens=r.randint(1, 40),
        )


def eval_runner(world: World, actor: str) -> None:
    """An evaluation harness: the same benchmark items, run again for each model and setting."""
    r = world.rng
    org = f"org_{actor}"
    account = world.account(
        "eval_runner", False, actor, org=org, email=world.human_email(f"{world.token('lab', 4)}.ai")
    )
    items = r.sample(world.corpus.pool("eval"), r.randint(100, 300))
    ips, agent = world.datacenter_pool(), r.choice(SCRIPT_AGENTS)
    cot_prompting = r.random() < 0.5  # many harnesses prompt with "Let's think step by step"
    if r.random() < 0.4:
        _likelihood_suite(world, account, org, items[:100], ips, agent)
    for _ in range(r.randint(3, 8)):
        begin = START + r.uniform(0, world.days - 0.5) * DAY
        model = world.model_at(begin, pivots=False, adopt=0.8)
        temperature = r.choice([0.0, 0.0, 0.7])
        for i, item in enumerate(items):
            q = item.turns[0]
            prompt = f"{q}\n\nLet's think step by step." if cot_prompting else q
            world.request(
                account,
                begin + i * r.uniform(0.3, 1.5),
                [prompt],
                ip=r.choice(ips),
                agent=agent,
                org=org,
                model=model,
                max_tokens=1024,
                temperature=temperature,
                answer_tokens=r.randint(150, 700),
            )


def _likelihood_suite(
    world: World, account: str, org: str, items: list, ips: list[str], agent: str
) -> None:
    """A multiple-choice suite scored by log-likelihood, as evaluation harnesses do: each
    item's context with each choice appended, one token asked (its log-probabilities are
    read), on every model in turn."""
    r = world.rng
    for model in MODELS_BEFORE:
        t = START + r.uniform(0, world.days - 0.5) * DAY
        for item in items:
            context = item.turns[0][:1500]
            for choice in r.sample(context.split() or ["yes"], min(4, len(context.split()) or 1)):
                world.request(
                    account,
                    t,
                    [f"{context}\nAnswer: {choice}"],
                    ip=r.choice(ips),
                    agent=agent,
                    org=org,
                    model=model,
                    max_tokens=1,
                    temperature=0.0,
                    answer_tokens=1,
                    endpoint="/completions",
                    logits={"logprobs": 1, "echo": True},  # the context's score
                )
                t += r.uniform(0.05, 0.3)


def _growing(text: str, words: int, window: int) -> list[str]:
    """The prefixes of `text` a word or few apart, each cut to its last `window` characters
    (what fits the context)."""
    split = text.split()
    return [" ".join(split[:end])[-window:] for end in range(8, len(split) + 1, words)]


def autocomplete_user(world: World, actor: str) -> None:
    """An editor's inline completion: as a developer types, the file so far is sent again,
    a few words longer each time, for a short completion, at work hours."""
    r = world.rng
    account = world.account("autocomplete_user", False, actor)
    agent, ip = r.choice(SCRIPT_AGENTS), world.residential_ip()
    times = world.human_times(r.randint(300, 3000), r.choice([-8, -5, 1, 5]), session_size=30)
    prefixes: list[str] = []
    for ts in times:
        if not prefixes:
            code = " ".join(world.pick("code").turns[0] for _ in range(3))
            prefixes = _growing(code, r.randint(1, 4), 3000)[::-1]
        world.request(
            account,
            ts,
            [prefixes.pop()],
            ip=ip,
            agent=agent,
            max_tokens=r.choice([16, 32, 64]),
            temperature=0.2,
            answer_tokens=r.randint(4, 40),
            endpoint="/completions",
        )


def aggregator(world: World, actor: str) -> None:
    """An app serving many end users through one key: big, varied, conversational."""
    r = world.rng
    org = f"org_{actor}"
    account = world.account(
        "aggregator", False, actor, org=org, email=f"api@{world.token('app', 4)}.io"
    )
    _many_users(world, account, org, r.randint(4000, 12000), share_attack=0.0)


def org_seats(world: World, actor: str) -> None:
    """A company: dozens of employees, one email domain, one office IP (NAT)."""
    r = world.rng
    org, domain = f"org_{actor}", f"{world.token('co', 4)}.com"
    office = world.residential_ip()
    for _ in range(r.randint(15, 60)):
        account = world.account(
            "org_seat", False, actor, org=org, email=world.human_email(domain), signup_ip=office
        )
        pool = r.choice(["chat", "code", "code"])
        _human_traffic(world, account, r.randint(10, 300), pool=pool, tz=-5, ip=office, org=org)


# -- attackers ------------------------------------------------------------------------


def bulk_harvester(world: World, actor: str) -> None:
    """One account, everything it can get: broad prompts, long answers, around the clock."""
    r = world.rng
    ips = world.datacenter_pool()
    account = world.account(
        "bulk_harvester",
        True,
        actor,
        signup_ip=ips[0],
        email=world.bot_email(r.choice(["gmail.com", "outlook.com"])),
    )
    agent = r.choice(SCRIPT_AGENTS)
    for ts in world.steady_times(r.randint(2000, 8000)):
        q = world.pick(r.choice(["chat", "code", "math", "chat"])).turns[0]
        world.request(
            account,
            ts,
            [q],
            ip=r.choice(ips),
            agent=agent,
            model=world.model_at(ts, pivots=True),
            max_tokens=r.choice([2048, 4096]),
            temperature=r.choice([0.7, 1.0]),
            answer_tokens=r.randint(400, 1500),
        )


def cot_harvester(world: World, actor: str, multilingual: bool = False) -> None:
    """Collects reasoning traces: questions wrapped in requests to show the reasoning."""
    r = world.rng
    ips = world.datacenter_pool()
    archetype = "multilingual_harvester" if multilingual else "cot_harvester"
    account = world.account(
        archetype,
        True,
        actor,
        signup_ip=ips[0],
        email=world.bot_email(world.token("mx", 3) + ".net"),
    )
    agent = r.choice(SCRIPT_AGENTS)
    pools = ["math_multilingual", "chat_zh"] if multilingual else ["math", "code", "chat"]
    phrases = [p for p in world.corpus.pool("cot_phrases") if (p.language != "en") == multilingual]
    for ts in world.steady_times(r.randint(1500, 6000)):
        q = world.pick(r.choice(pools)).turns[0]
        phrase = r.choice(phrases).turns[0] if phrases else _cot_phrase(world)
        prompt = (
            phrase.replace("{question}", q).replace("{answer}", "42")
            if "{" in phrase
            else f"{q}\n\n{phrase}"
        )
        world.request(
            account,
            ts,
            [prompt],
            ip=r.choice(ips),
            agent=agent,
            model=world.model_at(ts, pivots=True),
            max_tokens=4096,
            temperature=r.choice([0.0, 0.7]),
            answer_tokens=r.randint(500, 2000),
        )


def multilingual_harvester(world: World, actor: str) -> None:
    cot_harvester(world, actor, multilingual=True)


def capability_sweep(world: World, actor: str) -> None:
    """Covers one skill systematically through a fixed template (coding agent, tools, maths)."""
    r = world.rng
    ips = world.datacenter_pool()
    account = world.account(
        "capability_sweep",
        True,
        actor,
        signup_ip=ips[0],
        email=world.bot_email(r.choice(["gmail.com", "proton.me"])),
    )
    pool, template = SWEEP_TEMPLATES[r.choice(list(SWEEP_TEMPLATES))]
    agent = r.choice(SCRIPT_AGENTS)
    for ts in world.steady_times(r.randint(1500, 6000)):
        prompt = template.format(q=world.pick(pool).turns[0])
        world.request(
            account,
            ts,
            [prompt],
            ip=r.choice(ips),
            agent=agent,
            model=world.model_at(ts, pivots=True),
            max_tokens=r.choice([2048, 4096]),
            temperature=0.7,
            answer_tokens=r.randint(500, 1800),
        )


def logit_prober(world: World, actor: str) -> None:
    """Logit distillation: worked answers scored one position at a time, the prompt a word
    or two longer each request and one answer token asked for its log-probabilities. What
    is copied is the model's distribution over each next token, not an answer."""
    r = world.rng
    ips = world.datacenter_pool()
    account = world.account(
        "logit_prober", True, actor, signup_ip=ips[0], email=world.bot_email("gmail.com")
    )
    agent = r.choice(SCRIPT_AGENTS)
    endpoint = r.choice(["/completions", "/chat/completions"])
    prefixes: list[str] = []
    for ts in world.steady_times(r.randint(3000, 9000)):
        if not prefixes:
            pool = r.choice(["math", "code", "chat"])
            # A question and text that stands for its worked answer.
            answer = " ".join(world.pick(pool).turns[0] for _ in range(3))
            text = f"{world.pick(pool).turns[0]}\n\n{answer}"
            prefixes = _growing(text, r.choice([1, 2]), 2000)[::-1]
        world.request(
            account,
            ts,
            [prefixes.pop()],
            ip=r.choice(ips),
            agent=agent,
            model=world.model_at(ts, pivots=True),
            max_tokens=1,
            temperature=0.0,
            answer_tokens=1,
            endpoint=endpoint,
            logits=_TOP_LOGPROBS[endpoint],
        )


# The answer's top-5 log-probabilities, as each endpoint asks for them.
_TOP_LOGPROBS = {
    "/completions": {"logprobs": 5},
    "/chat/completions": {"logprobs": True, "top_logprobs": 5},
}


def text_scorer(world: World, actor: str) -> None:
    """Logit distillation without the one-token steps: a worked answer sent whole as the
    prompt, the model's log-probabilities asked at every position of it (vLLM's
    `prompt_logprobs`, or completions' `echo` with `logprobs`), one token generated. Or,
    stepwise, a few tokens at a time of many texts in turn (outside a one-token rule)."""
    r = world.rng
    ips = world.datacenter_pool()
    account = world.account(
        "text_scorer", True, actor, signup_ip=ips[0], email=world.bot_email("outlook.com")
    )
    agent = r.choice(SCRIPT_AGENTS)
    stepwise = r.random() < 0.5
    logits = r.choice([{"prompt_logprobs": 5}, {"logprobs": 5, "echo": True}])

    def worked() -> str:  # a question and text that stands for its worked answer
        pool = r.choice(["math", "code"])
        parts = [world.pick(pool).turns[0]]
        while sum(map(len, parts)) < 1500:  # hundreds of tokens, as a trace is
            parts.append(world.pick(pool).turns[0])
        return "\n\n".join(parts)

    in_turn: list[list[str]] = []
    for ts in world.steady_times(r.randint(2000, 6000)):
        if stepwise:
            while len(in_turn) < 12:  # a dozen texts scored in turn
                in_turn.append(_growing(worked(), r.randint(3, 8), 2000)[::-1])
            steps = r.choice(in_turn)
            text = steps.pop()
            if not steps:
                in_turn.remove(steps)
        else:
            text = worked()
        world.request(
            account,
            ts,
            [text[-6000:]],
            ip=r.choice(ips),
            agent=agent,
            model=world.model_at(ts, pivots=True),
            max_tokens=r.choice([4, 8, 16]) if stepwise else 1,
            temperature=0.0,
            answer_tokens=16 if stepwise else 1,
            endpoint="/completions",
            logits={"logprobs": 5} if stepwise else logits,
        )


def hydra(world: World, actor: str, size: int | None = None) -> None:
    """Hundreds of small accounts (`size`, default 100-1,000), each under every per-account
    limit, run as one operation."""
    r = world.rng
    size = size if size is not None else r.randint(100, 1000)
    cards = [world.token("pf_", 16) for _ in range(max(2, size // r.randint(15, 60)))]
    proxies = world.datacenter_pool(subnets=r.randint(2, 6))
    domain = r.choice(["gmail.com", f"{world.token('mail', 4)}.net"])
    agent = r.choice(SCRIPT_AGENTS)
    style = r.choice(["cot", "sweep", "bulk"])
    pool, template = SWEEP_TEMPLATES[r.choice(list(SWEEP_TEMPLATES))]
    burst = START + r.uniform(-3, 1) * DAY  # the signup script ran in one afternoon
    accounts = []
    for _ in range(size):
        created = burst + r.uniform(0, 4 * HOUR)
        accounts.append(
            world.account(
                "hydra",
                True,
                actor,
                email=world.bot_email(domain),
                payment=r.choice(cards),
                signup_ip=r.choice(proxies),
                created=created,
            )
        )
    # Synchronised waves: the controller hands each account a slice of work every few hours.
    waves = sorted(
        r.uniform(max(START, burst + 4 * HOUR), world.end) for _ in range(r.randint(20, 60))
    )
    for account in accounts:
        for wave in r.sample(waves, min(len(waves), r.randint(20, 80) // 3 + 1)):
            for k in range(3):
                ts = wave + r.uniform(0, 600) + k * r.uniform(5, 30)
                q = world.pick(
                    r.choice(["math", "code", "chat"]) if style != "sweep" else pool
                ).turns[0]
                prompt = (
                    _with_cot(world, q)
                    if style == "cot"
                    else (template.format(q=q) if style == "sweep" else q)
                )
                world.request(
                    account,
                    ts,
                    [prompt],
                    ip=r.choice(proxies),
                    agent=agent,
                    model=world.model_at(ts, pivots=True),
                    max_tokens=4096,
                    temperature=0.7,
                    answer_tokens=r.randint(400, 1500),
                )


def reseller(world: World, actor: str) -> None:
    """A reseller's key: real end users, and a distiller buying 5-50 % of the traffic."""
    r = world.rng
    org = f"org_{actor}"
    account = world.account(
        "reseller", True, actor, org=org, email=f"ops@{world.token('gpt', 4)}.shop"
    )
    _many_users(world, account, org, r.randint(4000, 12000), share_attack=r.uniform(0.05, 0.5))


def human_mimic(world: World, actor: str) -> None:
    """A harvester dressed as a person: conversations, paraphrased asks, human hours, home IPs."""
    account = world.account("human_mimic", True, actor, email=world.human_email())
    _mimic(
        world,
        account,
        world.rng.randint(1000, 4000),
        session=20.0,
        follow_ups=(1, 3),
        pivots=True,
        max_tokens=None,
        answers=(400, 1500),
    )


# -- attackers who know the detector (the `evasive` scenario) -----------------------------


def paced_harvester(world: World, actor: str) -> None:
    """A mimic that also stays under every anchor it can read in docs/tracing.md: human
    pace (60-140 a day), answers capped at 600 tokens, no pivot, its own paraphrases."""
    account = world.account("paced_harvester", True, actor, email=world.human_email())
    _mimic(
        world,
        account,
        world.rng.randint(400, 1000),
        session=8.0,
        follow_ups=(2, 3),
        pivots=False,
        max_tokens=600,
        answers=(300, 600),
    )


def _mimic(
    world: World,
    account: str,
    n: int,
    *,
    session: float,
    follow_ups: tuple[int, int],
    pivots: bool,
    max_tokens: int | None,
    answers: tuple[int, int],
) -> None:
    """Reasoning asks, paraphrased, each opening a short conversation, at human hours."""
    r = world.rng
    agent = r.choice(HUMAN_AGENTS)
    times = world.human_times(n, tz_hours=r.choice([-5, 1, 8]), session_size=session)
    i = 0
    while i < len(times):
        q = world.pick(r.choice(["math", "code", "chat"])).turns[0]
        ask = f"{r.choice(_MIMIC_OPEN)} {r.choice(_MIMIC_ASK)}?{r.choice(_MIMIC_CLOSE)}"
        turns = [f"{q}\n\n{ask}" if r.random() < 0.5 else f"{ask}\n\n{q}"]
        conversation = world.token("conv_", 12)
        for _ in range(r.randint(*follow_ups)):
            if i >= len(times):
                break
            world.request(
                account,
                times[i],
                list(turns),
                ip=world.residential_ip(),
                agent=agent,
                model=world.model_at(times[i], pivots=pivots),
                max_tokens=max_tokens,
                temperature=1.0,
                answer_tokens=r.randint(*answers),
                conversation=conversation,
            )
            turns.append(r.choice(FOLLOW_UPS))
            i += 1


def sleeper_hydra(world: World, actor: str) -> None:
    """A hydra that shares nothing visible: a card, a home IP, a plausible email and a client
    per account, accounts opened over months, each at a person's pace."""
    r = world.rng
    for _ in range(r.randint(100, 300)):
        times = world.human_times(r.randint(20, 60), tz_hours=r.choice([-5, 1, 8]))
        _disguised_account(world, "sleeper_hydra", actor, times)


def synchronised_hydra(world: World, actor: str) -> None:
    """The sleeper hydra's disguise, but one scheduler drives every account: each works
    through its slice in the same waves (the one thing it forgot to vary)."""
    r = world.rng
    waves = sorted(r.uniform(START, world.end) for _ in range(r.randint(20, 40)))
    for _ in range(r.randint(100, 300)):
        times = sorted(
            wave + r.uniform(0, 480) + k * r.uniform(5, 30)
            for wave in r.sample(waves, r.randint(8, 15))
            for k in range(3)
        )
        _disguised_account(world, "synchronised_hydra", actor, times)


def _disguised_account(world: World, archetype: str, actor: str, times: list[float]) -> None:
    r = world.rng
    account = world.account(archetype, True, actor, email=world.human_email())
    agent, home = r.choice(HUMAN_AGENTS), world.residential_ip()
    for ts in times:
        q = world.pick(r.choice(["math", "code", "chat"])).turns[0]
        world.request(
            account,
            ts,
            [_with_cot(world, q)],
            ip=home,
            agent=agent,
            max_tokens=2048,
            temperature=0.7,
            answer_tokens=r.randint(400, 1200),
        )


# -- shared traffic shapes -----------------------------------------------------------


def _human_traffic(
    world: World,
    account: str,
    n: int,
    *,
    pool: str,
    tz: int,
    session: float = 4.0,
    max_tokens: int | None = None,
    cot: float = 0.02,
    pool_mix: float = 0.3,
    ip: str | None = None,
    org: str | None = None,
) -> None:
    """Conversations at human hours: a question, sometimes follow-ups, sometimes a new topic."""
    r = world.rng
    agent = r.choice(HUMAN_AGENTS)
    home = ip or world.residential_ip()
    turns: list[str] = []
    conversation = None
    for ts in world.human_times(max(n, 1), tz_hours=tz, session_size=session):
        if not turns or r.random() < 0.45 or len(turns) > 6:
            prompt = world.pick(pool if r.random() > pool_mix else "chat")
            turns = [prompt.turns[0]]
            if r.random() < cot:
                turns[0] = _with_cot(world, turns[0])
            conversation = world.token("conv_", 12)
        else:
            turns = [*turns, r.choice(FOLLOW_UPS)]
        world.request(
            account,
            ts,
            list(turns),
            ip=home if r.random() < 0.9 else world.residential_ip(),
            agent=agent,
            org=org,
            max_tokens=max_tokens,
            temperature=r.choice([None, 0.7]),
            answer_tokens=r.randint(80, 700),
            conversation=conversation if len(turns) > 1 else None,
        )


def _many_users(world: World, account: str, org: str, n: int, share_attack: float) -> None:
    """Traffic of an app's end users through one key, with an attacker's share mixed in."""
    r = world.rng
    ips = world.datacenter_pool(subnets=2)
    agent = f"{world.token('app', 3)}-backend/2.{r.randint(0, 9)}"
    pool, template = SWEEP_TEMPLATES[r.choice(list(SWEEP_TEMPLATES))]
    humans = world.human_times(int(n * (1 - share_attack)), tz_hours=0, session_size=6.0)
    for ts in humans:
        first = world.pick(r.choice(["chat", "chat", "code", "math", "chat_zh"])).turns
        turns = list(first[: r.randint(1, len(first))])
        if r.random() < 0.4:
            turns.append(r.choice(FOLLOW_UPS))
        if r.random() < 0.03:
            turns[-1] = _with_cot(world, turns[-1])
        world.request(
            account,
            ts,
            turns,
            ip=r.choice(ips),
            agent=agent,
            org=org,
            max_tokens=r.choice([None, 1024, 2048]),
            temperature=0.7,
            answer_tokens=r.randint(80, 800),
            conversation=world.token("conv_", 12) if len(turns) > 1 else None,
        )
    for ts in world.steady_times(int(n * share_attack)):
        q = world.pick(pool if r.random() < 0.5 else "math").turns[0]
        prompt = template.format(q=q) if r.random() < 0.5 else _with_cot(world, q)
        world.request(
            account,
            ts,
            [prompt],
            ip=r.choice(ips),
            agent=agent,
            org=org,
            model=world.model_at(ts, pivots=True),
            max_tokens=4096,
            temperature=0.7,
            answer_tokens=r.randint(500, 1800),
        )


ARCHETYPES: dict[str, Callable[[World, str], None]] = {
    "casual": casual,
    "coding_power_user": coding_power_user,
    "researcher": researcher,
    "batch_job": batch_job,
    "eval_runner": eval_runner,
    "aggregator": aggregator,
    "autocomplete_user": autocomplete_user,
    "org_seats": org_seats,
    "bulk_harvester": bulk_harvester,
    "cot_harvester": cot_harvester,
    "multilingual_harvester": multilingual_harvester,
    "capability_sweep": capability_sweep,
    "logit_prober": logit_prober,
    "text_scorer": text_scorer,
    "hydra": hydra,
    "reseller": reseller,
    "human_mimic": human_mimic,
    "paced_harvester": paced_harvester,
    "sleeper_hydra": sleeper_hydra,
    "synchronised_hydra": synchronised_hydra,
}
