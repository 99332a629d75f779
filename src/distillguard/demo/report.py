"""The demo's HTML report: one self-contained page (styles inline, drawings in SVG), so it
reads offline and can be mailed around."""

from __future__ import annotations

from collections import defaultdict
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import ChoiceLoader, Environment, PackageLoader, select_autoescape

from distillguard.config import TracingSettings
from distillguard.demo.run import COHORTS, TIERS, Demo
from distillguard.gateway.console.views import Views
from distillguard.store import AccountStore, EventStore, open_engine
from distillguard.tracing.online import OnlineTracer

CHART_WIDTH, CHART_HEIGHT, MARGIN = 720, 260, 36
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
    templates.filters["id_url"] = lambda value: quote(str(value), safe="")
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


def _chart(demo: Demo, engine, accounts: list[str]) -> dict[str, Any]:
    """Each shown account's online score at its checkpoints, replayed from the store with
    the gateway's own tracer (shadow, so nothing changes), on the simulated clock."""
    tracer = OnlineTracer(AccountStore(engine), TracingSettings(**TIERS), shadow=True)
    wanted = set(accounts)
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    first = demo.replay_started  # the harvester's real answers came just before
    batch: list[dict[str, Any]] = []

    def fold() -> None:
        for point in tracer.scored(batch):
            if point.account_id in wanted and point.ts >= first:
                series[point.account_id].append((point.ts, point.score))
        batch.clear()

    for row in EventStore(engine).read():
        batch.append(row)
        if len(batch) >= 500:
            fold()
    fold()
    span = max(max((t for s in series.values() for t, _ in s), default=first) - first, 1e-9)
    inner_w, inner_h = CHART_WIDTH - 2 * MARGIN, CHART_HEIGHT - 2 * MARGIN

    def x(ts: float) -> float:
        return MARGIN + inner_w * (ts - first) / span

    def y(score: float) -> float:
        return MARGIN + inner_h * (1 - score)

    lines = [
        {
            "account_id": a,
            "points": " ".join(f"{x(t):.1f},{y(s):.1f}" for t, s in series[a]),
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
        "right": CHART_WIDTH - MARGIN,
        "bottom": CHART_HEIGHT - MARGIN,
        "simulated_hours": round(span * demo.speedup / 3600, 1),
    }
