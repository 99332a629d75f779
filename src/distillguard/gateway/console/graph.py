"""A cluster's linking evidence laid out as a graph the console draws in SVG.

Members sit on a circle; each thing that ties some of them to one operator (a card, a
signup IP, a synchronised pair) is a node inside it, joined to the members who hold it.
Laid out here, on the server, so the page needs no script and no library from elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from distillguard.tracing.linkage import TIE_NAMES

SIZE = 680  # the drawing's width and height
MAX_MEMBERS = 60  # drawn; the rest are counted in words
MAX_TIES = 80


@dataclass
class Node:
    id: str
    x: float
    y: float
    label: str
    css: str  # the class that colours it: tier-block, ..., tier-none (not in the store), tie
    # Where its label goes: outside the circle, anchored away from it so neighbours' labels
    # do not run into each other.
    label_x: float = 0.0
    label_y: float = 0.0
    anchor: str = "middle"


@dataclass
class Graph:
    members: list[Node] = field(default_factory=list)
    ties: list[Node] = field(default_factory=list)
    edges: list[tuple[float, float, float, float]] = field(default_factory=list)
    hidden_members: int = 0
    hidden_ties: int = 0
    size: int = SIZE


def layout(accounts: Sequence[str], ties: Sequence[Mapping], tiers: Mapping[str, str]) -> Graph:
    """The graph of one cluster: `ties` as stored ({"kind", "accounts"}), `tiers` each
    member's tier (for its colour). Tied members are drawn first when not all fit."""
    tied = {a for tie in ties for a in tie["accounts"]}
    ordered = sorted(accounts, key=lambda a: (a not in tied, a))
    shown = ordered[:MAX_MEMBERS]
    centre, radius = SIZE / 2, SIZE / 2 - 110
    graph = Graph(hidden_members=len(ordered) - len(shown))
    where: dict[str, tuple[float, float]] = {}
    for i, account in enumerate(shown):
        angle = 2 * math.pi * i / max(len(shown), 1) - math.pi / 2
        cos, sin = math.cos(angle), math.sin(angle)
        x, y = centre + radius * cos, centre + radius * sin
        where[account] = (x, y)
        anchor = "start" if cos > 0.1 else "end" if cos < -0.1 else "middle"
        graph.members.append(
            Node(
                account,
                x,
                y,
                _short(account),
                f"tier-{tiers.get(account) or 'none'}",
                centre + (radius + 12) * cos,
                centre + (radius + 12) * sin + 4,
                anchor,
            )
        )
    drawn = [t for t in ties if sum(a in where for a in t["accounts"]) >= 2]
    graph.hidden_ties = len(drawn[MAX_TIES:]) + len(ties) - len(drawn)
    for n, tie in enumerate(drawn[:MAX_TIES]):
        held = [where[a] for a in tie["accounts"] if a in where]
        # Halfway between the members' centroid and the centre: inside the circle, near them.
        x = (sum(p[0] for p in held) / len(held) + centre) / 2
        y = (sum(p[1] for p in held) / len(held) + centre) / 2
        kind = TIE_NAMES.get(tie["kind"], tie["kind"])
        graph.ties.append(Node(f"t{n}", x, y, f"{kind} ({len(tie['accounts'])})", "tie"))
        graph.edges.extend((x, y, px, py) for px, py in held)
    return graph


def _short(account: str, width: int = 14) -> str:
    return account if len(account) <= width else account[: width - 1] + "…"
