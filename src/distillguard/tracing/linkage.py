"""Which accounts are one actor: a weighted graph over what they share, cut into communities.

A hydra operator spreads traffic over many accounts so that none stands out,
but running them costs resources the operator reuses: a few payment cards, a
proxy pool (shared IPs and subnets), generated email addresses at one domain
or in one shape, one client (user agent), one prompt template, one signup
script (accounts born in a burst). Each shared thing is a node; every account
that has it links to it with the weight of that kind of evidence. Louvain
community detection (networkx) then finds the groups that share much with
each other and little with the rest, which resists the chaining that plain
"share anything → same cluster" would cause (a mobile carrier's subnet, a
popular SDK's user agent).

A shared thing used by a large part of the whole population (a big free-mail
domain, the default user agent of the OpenAI SDK) says nothing about who runs
an account: it is left out (see `COMMON_SHARE`).

An operator who buys a card, a home IP and an email per account still drives
them from one scheduler: `synchronised` links accounts active in the same
10-minute slots far more often than their own habits explain.
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import scipy.sparse as sp
from scipy.stats import poisson

from distillguard.tracing.records import AccountRecord

# Evidence weights: how strongly sharing this thing suggests one operator.
WEIGHTS = {
    "payment": 4.0,  # a card is rarely shared by strangers
    "signup_ip": 2.0,
    "ip": 1.0,
    "subnet": 0.5,  # /24 (IPv4) or /48 (IPv6): proxy pools rotate within one
    "email_domain": 1.5,  # a non-free-mail domain: a company, or a throwaway one
    "email_shape": 1.0,  # machine-made local parts of one shape @ one free-mail domain
    "user_agent": 0.5,
    "template": 1.5,
    "born": 1.0,  # created in the same 10 minutes as many others
    "timing": 1.0,  # a pair active in the same minutes far beyond chance
}
# How a cluster's evidence names each kind of shared thing.
KIND_NAMES = {
    "payment": "shared payment fingerprints",
    "signup_ip": "shared signup IPs",
    "ip": "shared IPs",
    "subnet": "shared subnets",
    "email_domain": "shared email domains",
    "email_shape": "shared machine-made email shapes",
    "user_agent": "shared clients",
    "template": "shared prompt templates",
    "born": "signup bursts",
    "timing": "pairs active in the same minutes beyond chance",
}
# What an operator reuses to run many accounts, and strangers rarely share: the same card,
# a signup script (one signup IP, a burst of creations, generated email shapes), one
# scheduler (synchronised timing). Cloud egress, subnets, a popular client, a company's
# mail domain or a common prompt template link strangers and colleagues as well.
CONTROLLER_KINDS = frozenset(["payment", "signup_ip", "born", "email_shape", "timing"])
TIE_NAMES = {  # one thing of each controller kind, as the console's graph labels it
    "payment": "one card",
    "signup_ip": "one signup IP",
    "born": "one signup burst",
    "email_shape": "one email shape",
    "timing": "synchronised",
}
COMMON_SHARE = 0.05  # a thing shared by more than 5 % of all accounts is not linkage ...
COMMON_SHARE_OF = {"user_agent": 0.01, "subnet": 0.02}  # ... nor a popular client or ISP
RESOLUTION = 0.3  # Louvain: below 1 favours whole operations over fragments of them
MIN_SHARED = 2
BORN_BUCKET = 600.0
BURST = 10  # accounts created in one bucket before creation time counts as a link
# Synchronised timing.
SLOT = 600.0  # activity is compared in 10-minute slots
DAY_SLOTS = 144
MIN_TOGETHER = 4  # slots two accounts must share before their timing is tested
BUSY_SHARE = 0.2  # an account active in more of all slots than this overlaps everyone
PARTNERS = 8  # each account keeps its most synchronised partners: enough to be one community
CHANCE_LINKS = 0.05  # expected links between strangers in a whole population, however large
FREE_MAIL = frozenset(
    [
        "gmail.com",
        "googlemail.com",
        "outlook.com",
        "hotmail.com",
        "live.com",
        "yahoo.com",
        "icloud.com",
        "me.com",
        "aol.com",
        "proton.me",
        "protonmail.com",
        "gmx.de",
        "gmx.net",
        "web.de",
        "mail.ru",
        "yandex.ru",
        "qq.com",
        "163.com",
        "126.com",
        "naver.com",
        "yahoo.co.jp",
    ]
)


@dataclass
class Cluster:
    cluster_id: str
    accounts: list[str]
    shared: dict[str, int] = field(default_factory=dict)  # kind -> things the members share
    # Groups of members tied by one thing of CONTROLLER_KINDS (a card, a signup IP, a
    # synchronised pair, ...), with that thing's kind: who could be run by one operator,
    # whatever else links them.
    ties: list[tuple[str, frozenset[str]]] = field(default_factory=list)

    def tied(self, among: set[str]) -> set[str]:
        """The accounts of `among` tied to another account of `among` by controller evidence."""
        found: set[str] = set()
        for _, group in self.ties:
            both = group & among
            if len(both) >= 2:
                found |= both
        return found

    def links(self) -> str:
        """What holds the cluster together, in words: "9 shared payment fingerprints, …"."""
        said = ", ".join(f"{n} {KIND_NAMES[kind]}" for kind, n in self.shared.items())
        return f"{len(self.accounts)} accounts linked by {said or 'weak signals'}"


def account_things(
    account: AccountRecord | None,
    ips: Iterable[str],
    agents: Iterable[str],
    templates: Iterable[int],
) -> list[tuple[str, str]]:
    """(kind, value) pairs an account holds; values are compared, never shown."""
    things: list[tuple[str, str]] = []
    if account is not None:
        if account.payment_fingerprint:
            things.append(("payment", account.payment_fingerprint))
        if account.signup_ip:
            things.append(("signup_ip", account.signup_ip))
            things.extend(_subnet(account.signup_ip))
        if account.email and "@" in account.email:
            local, domain = account.email.lower().rsplit("@", 1)
            if domain in FREE_MAIL:
                if _generated(local):
                    things.append(("email_shape", f"{_shape(local)}@{domain}"))
            else:
                things.append(("email_domain", domain))
        if account.created_at is not None:
            things.append(("born", str(int(account.created_at // BORN_BUCKET))))
    for ip in ips:
        things.append(("ip", ip))
        things.extend(_subnet(ip))
    things.extend(("user_agent", agent) for agent in agents)
    things.extend(("template", str(t)) for t in templates)
    return list(dict.fromkeys(things))  # once each


def clusters(
    things: Mapping[str, list[tuple[str, str]]],
    synchronised: Iterable[tuple[str, str]] = (),
    seed: int = 0,
) -> list[Cluster]:
    """Communities of two or more accounts, largest first. `synchronised` pairs (from
    `synchronised()`) link two accounts directly."""
    holders: dict[tuple[str, str], list[str]] = defaultdict(list)
    for account, held in things.items():
        for thing in held:
            holders[thing].append(account)
    population = max(len(things), 1)
    graph = nx.Graph()
    for (kind, value), members in holders.items():
        common = COMMON_SHARE_OF.get(kind, COMMON_SHARE) * population
        if len(members) < MIN_SHARED or len(members) > max(common, BURST):
            continue
        if kind == "born" and len(members) < BURST:
            continue
        node = ("thing", kind, value)
        for account in members:
            graph.add_edge(("account", account), node, weight=WEIGHTS[kind], kind=kind)
    for a, b in synchronised:
        graph.add_edge(("account", a), ("account", b), weight=WEIGHTS["timing"], kind="timing")
    found: list[Cluster] = []
    for community in nx.community.louvain_communities(
        graph, weight="weight", resolution=RESOLUTION, seed=seed
    ):
        members = sorted(name for tag, *rest in community if tag == "account" for name in rest)
        if len(members) < 2:
            continue
        cluster = Cluster("", members)
        timed = 0  # each synchronised pair inside is seen from both ends
        for node in community:
            if node[0] == "account":
                partners = [n for n in graph[node] if n[0] == "account" and n in community]
                timed += len(partners)
                cluster.ties.extend(
                    ("timing", frozenset((node[1], n[1]))) for n in partners if n > node
                )
                continue
            holders = [n for n in graph[node] if n in community]
            if len(holders) >= 2:
                kind = node[1]
                cluster.shared[kind] = cluster.shared.get(kind, 0) + 1
                if kind in CONTROLLER_KINDS:
                    cluster.ties.append((kind, frozenset(h[1] for h in holders)))
        if timed:
            cluster.shared["timing"] = timed // 2
        found.append(cluster)
    found.sort(key=lambda c: (-len(c.accounts), c.accounts[0]))
    for number, cluster in enumerate(found, 1):
        cluster.cluster_id = f"c{number:05d}"
    return found


def synchronised(accounts: Sequence[str], who: np.ndarray, ts: np.ndarray) -> list[tuple[str, str]]:
    """Pairs of accounts active in the same 10-minute slots far more often than chance.

    `who[i]` indexes `accounts` for the request at time `ts[i]`. Chance is judged
    against each pair's own habits: two people who both work mornings share slots
    every day, as do two nightly cron jobs, so the overlap expected is what the pair
    shares when one of them is moved to other days at the same times of day (the mean
    over every circular shift by whole days), and never less than two accounts this
    active share when both follow the population's daily rhythm. A pair is linked when
    P(Poisson(expected) >= shared) is below CHANCE_LINKS over the number of pairs
    compared (Bonferroni), and each account keeps only its PARTNERS most surprising
    links: a thousand-account operation stays one community without a million edges.
    Accounts active in more than BUSY_SHARE of all slots overlap everyone and are not
    compared; a trace shorter than two days has no other day to compare with.
    """
    if len(ts) == 0:
        return []
    slot = np.floor(np.asarray(ts) / SLOT).astype(np.int64)
    slot -= slot.min()
    days = int(slot.max()) // DAY_SLOTS + 1
    if days < 2:
        return []
    total = days * DAY_SLOTS
    active = np.unique(np.asarray(who, dtype=np.int64) * total + slot)
    owner, when = active // total, active % total
    size = np.bincount(owner, minlength=len(accounts))
    compared = (size >= MIN_TOGETHER) & (size <= BUSY_SHARE * total)
    keep = compared[owner]
    members = np.flatnonzero(compared)
    n = len(members)
    if n < 2:
        return []
    row = np.searchsorted(members, owner[keep])
    ones = np.ones(len(row), dtype=np.float32)
    slots = sp.csr_matrix((ones, (row, when[keep])), shape=(n, total))
    # Each account's habit: on how many days it was active at each time of day.
    habit = sp.csr_matrix((ones, (row, when[keep] % DAY_SLOTS)), shape=(n, DAY_SLOTS)).toarray()
    busy = slots.sum(axis=0).A1
    rhythm = float(((busy / busy.sum()) ** 2).sum())  # chance two random slots coincide
    size = size[members]
    threshold = np.log(CHANCE_LINKS / (n * (n - 1) / 2))
    by_slot = slots.T.tocsr()
    found_a, found_b, found_p = [], [], []
    for start in range(0, n, 512):  # a block of rows at a time: bounded memory
        shared = (slots[start : start + 512] @ by_slot).tocoo()
        a, b, together = shared.row + start, shared.col, shared.data
        tested = (b > a) & (together >= MIN_TOGETHER)
        a, b, together = a[tested], b[tested], together[tested]
        same_times = ((habit[a] * habit[b]).sum(axis=1) - together) / (days - 1)
        expected = np.maximum(same_times, size[a] * size[b] * rhythm)
        surprise = poisson.logsf(together - 1, expected)
        linked = surprise < threshold
        found_a.append(a[linked])
        found_b.append(b[linked])
        found_p.append(surprise[linked])
    a, b, p = (np.concatenate(x) for x in (found_a, found_b, found_p))
    # Every account's PARTNERS most surprising links (from either end).
    ends, others, surprise = np.concatenate([a, b]), np.concatenate([b, a]), np.concatenate([p, p])
    order = np.lexsort((surprise, ends))
    ends, others = ends[order], others[order]
    rank = np.arange(len(ends)) - np.searchsorted(ends, ends)
    best = rank < PARTNERS
    pairs = {
        (min(x, y), max(x, y))
        for x, y in zip(ends[best].tolist(), others[best].tolist(), strict=True)
    }
    return [(accounts[members[x]], accounts[members[y]]) for x, y in sorted(pairs)]


def _subnet(ip: str) -> list[tuple[str, str]]:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return []
    if address.version == 6 and address.ipv4_mapped is not None:  # ::ffff:a.b.c.d
        address = address.ipv4_mapped
        ip = str(address)
    prefix = 24 if address.version == 4 else 48
    return [("subnet", str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False)))]


_LETTERS = re.compile(r"[^\W\d_]+")
_DIGITS = re.compile(r"\d+")


def _shape(local: str) -> str:
    """ "kx7f9q2" -> "a0a0a0": the pattern a generator leaves, with run lengths."""
    shape = _DIGITS.sub(lambda m: f"0{len(m.group())}", local)
    return _LETTERS.sub(lambda m: f"a{len(m.group())}", shape)


def _generated(local: str) -> bool:
    """A local part a signup script made: a long unbroken run of letters then digits.

    "kxqfmzrt4821" is; "anna.smith", "ben1990" and "chen_wei" are not (people use
    separators and short names), so their shapes link no one.
    """
    letters = max((len(m) for m in _LETTERS.findall(local)), default=0)
    digits = max((len(m) for m in _DIGITS.findall(local)), default=0)
    return letters >= 7 and digits >= 3 and "." not in local and "_" not in local
