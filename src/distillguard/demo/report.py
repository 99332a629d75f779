"""The demo's HTML report: one self-contained page (styles inline, drawings in SVG), so it
reads offline and can be mailed around."""

from __future__ import annotations

import math
from collections import defaultdict
from importlib.resources import files
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, PackageLoader, select_autoescape
from sqlalchemy import Engine

from distillguard.config import TracingSettings
from distillguard.demo.providers import COHORTS, TIERS
from distillguard.demo.run import Demo
from distillguard.gateway.console import id_url
from distillguard.gateway.console.views import Views
from distillguard.store import AccountStore, EventStore, open_engine
from distillguard.tracing.online import OnlineTracer

CHART_WIDTH, CHART_HEIGHT, MARGIN = 760, 260, 36
LABELS = 50  # room on the right for the thresholds' names
CASUAL_SHOWN = 4


def write_report(demo: Demo) -> Path:
    engine = open_engine(f"sqlite:///{demo.out / 'provider-a.db'}")
    views = Views(engine)
    shown = _shown(demo)
    operations = views.operations()["clusters"]
    biggest = max(
        (c for c in operations if c["flagged"]), key=lambda c: len(c["accounts"]), default=None
    )
    templates = Environment(
        loader=ChoiceLoader(
            [PackageLoader("distillguard.demo"), PackageLoader("distillguard.gateway.console")]
        ),
        autoescape=select_autoescape(default=True),
    )
    templates.filters["id_url"] = id_url
    page = templates.get_template("report.html").render(
        demo=demo,
        css=(files("distillguard.gateway.console") / "static" / "console.css").read_text(),
        shown=shown,
        chart=_chart(demo, engine, [r["account_id"] for r in shown]),
        limits=views.limits()["last_day"],
        operation=views.operation(biggest["cluster_id"]) if biggest else None,
        signups=demo.signups,
        cohorts=COHORTS,
    )
    path = demo.out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _shown(demo: Demo) -> list[dict[str, Any]]:
    """Every account but the crowds: harvesters, heavy users, a few casual ones."""
    order = {"harvester": 0, "heavy legitimate": 1, "casual": 2}
    rows = [r for r in demo.accounts if r["role"] in order]
    casual = [r for r in rows if r["role"] == "casual"][:CASUAL_SHOWN]
    rows = [r for r in rows if r["role"] != "casual"] + casual
    return sorted(rows, key=lambda r: (order[r["role"]], -r["requests"]))


def _chart(demo: Demo, engine: Engine, accounts: list[str]) -> dict[str, Any]:
    """Each shown account's online score at its checkpoints, by the requests it had sent:
    replayed from the store with the gateway's own tracer (shadow: nothing changes)."""
    tracer = OnlineTracer(AccountStore(engine), TracingSettings(**TIERS), shadow=True)
    wanted = set(accounts)
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    batch: list[dict[str, Any]] = []

    def fold() -> None:
        for point in tracer.scored(batch):
            if point.account_id in wanted:
                series[point.account_id].append((point.features["requests"], point.score))
        batch.clear()

    for row in EventStore(engine).read():
        batch.append(row)
        if len(batch) >= 500:
            fold()
    fold()
    most = max((n for s in series.values() for n, _ in s), default=1.0)
    inner_w, inner_h = CHART_WIDTH - 2 * MARGIN - LABELS, CHART_HEIGHT - 2 * MARGIN

    # Requests on a log scale: a harvester is judged within its first few hundred, a heavy
    # user's thousands must fit beside it.
    def x(requests: float) -> float:
        return MARGIN + inner_w * math.log10(max(requests, 1.0)) / math.log10(max(most, 10.0))

    def y(score: float) -> float:
        return MARGIN + inner_h * (1 - score)

    lines = [
        {
            "account_id": a,
            "points": " ".join(f"{x(n):.1f},{y(s):.1f}" for n, s in series[a]),
            "role": next(r["role"] for r in demo.accounts if r["account_id"] == a),
        }
        for a in accounts
        if series.get(a)
    ]
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "lines": lines,
        "thresholds": [(name, y(value)) for name, value in TIERS.items()],
        "left": MARGIN,
        "right": CHART_WIDTH - MARGIN - LABELS,
        "bottom": CHART_HEIGHT - MARGIN,
        "ticks": [(f"{n:,}", x(n)) for n in (1, 10, 100, 1_000, 10_000) if n <= most],
    }
