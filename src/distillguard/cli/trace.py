"""`simulate` and `trace`: simulated traffic, and scoring the accounts and clusters of
recorded traffic."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from distillguard.cli.common import (
    EventsFile,
    StoreOption,
    check_writable,
    read_json,
    read_text,
    screen,
    store_url,
    write_json,
)
from distillguard.cli.exchange import open_watchlist
from distillguard.config import load_settings
from distillguard.errors import DistillguardError

if TYPE_CHECKING:
    from distillguard.tracing.records import InputReport

trace_app = typer.Typer(
    help="Behavioural tracing: distillation risk per account and cluster.", no_args_is_help=True
)

AccountsFile = Annotated[
    Path | None, typer.Option("--accounts", help="Accounts JSONL (signup details) for linkage.")
]


def simulate(
    out: Annotated[Path, typer.Option("--out", help="Directory for the three JSONL files.")],
    scenario: Annotated[
        str, typer.Option(help="default, hydra-swarm, hidden, heavy-benign or evasive.")
    ] = "default",
    seed: Annotated[int, typer.Option(help="Random seed: the same seed, the same traffic.")] = 0,
    scale: Annotated[float, typer.Option(help="Multiply every archetype's count.")] = 1.0,
    corpus: Annotated[
        Path | None,
        typer.Option(
            help="Prompt corpus folder (default: $DISTILLGUARD_PROMPTS, ../shared/data/prompts, "
            "else the starter corpus that ships with distillguard)."
        ),
    ] = None,
) -> None:
    """Simulate a week of traffic: events.jsonl, accounts.jsonl and labels.jsonl."""
    from distillguard.tracing.simulate import simulate as run_simulation
    from distillguard.tracing.simulate.corpus import STARTER, find_corpus

    prompts = find_corpus(corpus)
    if prompts == STARTER:
        screen.print(
            "prompts: the starter corpus that ships with distillguard (a few hundred, "
            "permissive licences); --corpus DIR or DISTILLGUARD_PROMPTS for a full one"
        )
    counts = run_simulation(scenario, out, prompts, seed=seed, scale=scale)
    screen.print(
        f"{counts['events']:,} events from {counts['accounts']:,} accounts "
        f"({counts['attackers']:,} attackers) written to {out}"
    )


def _show(report: InputReport) -> None:
    """Every bad line by number, in plain lines: people grep them, editors jump to
    file:line."""
    for problem in report.problems:
        print(f"skipped {problem}", file=sys.stderr)
    if report.bad:
        print(report.summary(), file=sys.stderr)


@trace_app.command("run")
def trace_run(
    events: EventsFile = None,
    accounts: AccountsFile = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    apply_tiers: Annotated[
        bool, typer.Option(help="Raise flagged accounts' gateway tiers (tracing.* settings).")
    ] = False,
    store: StoreOption = None,
    top: Annotated[int, typer.Option(help="Flagged accounts to list on screen.")] = 10,
) -> None:
    """Score every account and cluster; save the run in the store (and as JSON with --json)."""
    from distillguard.store import AccountStore, ScoreStore, open_engine
    from distillguard.tracing.records import load_inputs
    from distillguard.tracing.run import summary, trace
    from distillguard.tracing.tiers import earned_tiers

    check_writable(json_out)
    # The store opens before its log is read, or after the events file is.
    engine = open_engine(store_url(store)) if events is None else None
    loaded, signups = load_inputs(events, accounts, engine, _show)
    if engine is None:
        engine = open_engine(store_url(store))
    settings = load_settings()
    shared = None
    if settings.exchange.keyring is not None:  # templates other members shared
        shared = open_watchlist(store, None).shared_templates()
        if shared:
            screen.print(f"{len(shared):,} shared templates from the exchange watchlist")
    result = trace(loaded, signups, shared=shared, flag_at=settings.tracing.throttle_at)
    document = result.document()
    run_id = ScoreStore(engine).save_run(str(events or "store"), document, result.events)
    if json_out is not None:
        write_json(json_out, document)
    counts = summary(result)
    screen.print(
        f"run {run_id}: {counts['events']:,} events, {counts['accounts']:,} accounts, "
        f"{counts['flagged_accounts']:,} flagged; {counts['clusters']:,} clusters, "
        f"{counts['flagged_clusters']:,} flagged"
        + (
            f"; a crowd of {counts['crowd_accounts']:,} light accounts judged as one"
            if counts["crowd_accounts"]
            else ""
        )
    )
    # Operations first: one verdict there covers many accounts, and says what links them.
    operations = sorted(
        (c for c in result.clusters if c.flagged and c.operation),
        key=lambda c: (-len(c.accounts), -c.score),
    )
    if result.crowd is not None and result.crowd.flagged:
        operations.insert(0, result.crowd)
    if operations and top > 0:
        table = Table("operation", "accounts", "score", "linked by", "evidence")
        for c in operations[:top]:
            table.add_row(
                c.cluster_id,
                f"{len(c.accounts):,}",
                f"{c.score:.3f}",
                c.evidence[0],
                "; ".join(c.evidence[1:4]),
            )
        screen.print(table)
    flagged = sorted((a for a in result.accounts if a.flagged), key=lambda a: -a.score)
    if flagged and top > 0:
        table = Table("account", "score", "cluster", "flagged after", "evidence")
        for a in flagged[:top]:
            table.add_row(
                a.account_id,
                f"{a.score:.3f}",
                a.cluster_id or "-",
                str(a.flagged_after_requests),
                "; ".join(a.evidence[:3]),
            )
        screen.print(table)
    if apply_tiers:
        changed = AccountStore(engine).raise_tiers(
            earned_tiers(result, settings.tracing), actor="trace run"
        )
        moved = ", ".join(
            f"{tier}: {sum(t == tier for t in changed.values())}"
            for tier in sorted(set(changed.values()))
        )
        screen.print(f"tiers raised for {len(changed)} accounts ({moved or 'none'})")


@trace_app.command("evaluate")
def trace_evaluate(
    events: Annotated[Path, typer.Option("--events", help="Events JSONL.")],
    labels: Annotated[Path, typer.Option("--labels", help="labels.jsonl (from `simulate`).")],
    accounts: AccountsFile = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Directory for report.html, roc.png, .json.")
    ] = None,
) -> None:
    """Score the events, compare with labels and baselines, and report every metric."""
    from distillguard.tracing.evaluate import WORDS, evaluate, read_labels, write_report
    from distillguard.tracing.records import load_inputs
    from distillguard.tracing.run import trace

    check_writable(report)
    truth = read_labels(labels)
    loaded, signups = load_inputs(events, accounts, None, _show)
    flag_at = load_settings().tracing.throttle_at
    metrics = evaluate(trace(loaded, signups, flag_at=flag_at), loaded, truth)
    table = Table("method", "ROC-AUC", "PR-AUC", "TPR @1% FPR", "TPR @0.1% FPR")
    for name, row in metrics["account_level"].items():
        table.add_row(WORDS[name], *(f"{row[k]:.4f}" for k in row))
    screen.print(table)
    heavy, hydra = metrics["heavy_benign"], metrics["hydra_linkage"]
    bulk = metrics["time_to_flag"]["bulk_attackers"]
    if bulk["flagged"]:
        when = (
            f"{bulk['flagged']} of {bulk['attackers']} bulk attackers flagged, after a median "
            f"of {bulk['median_requests']:g} requests (p90 {bulk['p90_requests']})"
        )
    else:
        when = f"no bulk attacker flagged (of {bulk['attackers']})"
    screen.print(
        f"heavy benign users flagged: {heavy['flagged']} of {heavy['accounts']}; {when}; "
        f"hydra accounts linked: {hydra['linked']} of {hydra['hydra_accounts']}"
    )
    if report is not None:
        for path in write_report(metrics, report):
            screen.print(f"wrote {path}")


@trace_app.command("calibrate")
def trace_calibrate(
    result: Annotated[
        Path,
        typer.Option(
            "--result",
            help="A reference window's scores: the --json document of `trace run`.",
            exists=True,
            dir_okay=False,
        ),
    ],
    fpr: Annotated[
        float, typer.Option(help="Share of reference accounts the flag (throttle) may reach.")
    ] = 0.01,
    watch_fpr: Annotated[float, typer.Option(help="Share the watch tier may reach.")] = 0.05,
    reference: Annotated[
        Path | None,
        typer.Option(
            help="Account ids to calibrate on, one per line (accounts you vouch for); "
            "default: every account that sent a request.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Set the watch and flag thresholds from target false-positive rates on a reference
    window of your own traffic; prints the [tracing] settings to use."""
    from distillguard.tracing.calibrate import calibrate

    document = read_json(result)
    try:
        rows = document["accounts"]
        scores = {a["account_id"]: float(a["score"]) for a in rows}
        # An account that never sent a request scores 0 and would only dilute the rate.
        idle = {a["account_id"] for a in rows if a.get("requests", 1) == 0}
        if not all(0.0 <= score <= 1.0 for score in scores.values()):
            raise ValueError("a score outside [0, 1]")
    except (KeyError, TypeError, ValueError):
        raise DistillguardError(
            f"{result} is not a `trace run --json` document (accounts with scores)"
        ) from None
    vouched = None
    if reference is not None:
        listed = {line.strip() for line in read_text(reference).splitlines() if line.strip()}
        vouched = listed - idle
        if listed & idle:
            screen.print(f"{len(listed & idle):,} reference accounts sent no requests: left out")
    active = {a: s for a, s in scores.items() if a not in idle}
    points = calibrate(active, throttle_fpr=fpr, watch_fpr=watch_fpr, reference=vouched)
    table = Table("setting", "target", "threshold", "reference accounts at or above")
    for point in points:
        table.add_row(
            f"tracing.{point.tier}_at",
            f"{point.fpr:.2%}",
            f"{point.threshold:.4f}",
            f"{point.reached:,} of {point.reference:,} ({point.reached / point.reference:.2%})",
        )
    screen.print(table)
    screen.print(
        "[tracing]\n" + "\n".join(p.setting() for p in points), markup=False, highlight=False
    )
