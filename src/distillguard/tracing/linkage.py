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
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import networkx as nx

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
}
COMMON_SHARE = 0.05  # a thing shared by more than 5 % of all accounts is not linkage ...
COMMON_SHARE_OF = {"user_agent": 0.01, "subnet": 0.02}  # ... nor a popular client or ISP
RESOLUTION = 0.3  # Louvain: below 1 favours whole operations over fragments of them
MIN_SHARED = 2
BORN_BUCKET = 600.0
BURST = 10  # accounts created in one bucket before creation time counts as a link
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


def clusters(things: Mapping[str, list[tuple[str, str]]], seed: int = 0) -> list[Cluster]:
    """Communities of two or more accounts, largest first."""
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
    found: list[Cluster] = []
    for community in nx.community.louvain_communities(
        graph, weight="weight", resolution=RESOLUTION, seed=seed
    ):
        members = sorted(name for tag, *rest in community if tag == "account" for name in rest)
        if len(members) < 2:
            continue
        cluster = Cluster("", members)
        for node in community:
            if node[0] != "thing":
                continue
            if sum(n in community for n in graph[node]) >= 2:
                kind = node[1]
                cluster.shared[kind] = cluster.shared.get(kind, 0) + 1
        found.append(cluster)
    found.sort(key=lambda c: (-len(c.accounts), c.accounts[0]))
    for number, cluster in enumerate(found, 1):
        cluster.cluster_id = f"c{number:05d}"
    return found


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
