"""`demo`: the whole defence in one command, with a report to read afterwards."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from distillguard.cli.common import err, progress_bar, screen

EXIT_NOT_MET = 1


class _Screen:
    """Each phase a line with its time; counted phases with a bar while they run."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.progress = progress_bar()

    def say(self, line: str) -> None:
        err.print(f"[dim]{self._clock()}[/dim] {line}")

    def phase(self, title: str, total: int | None = None) -> Callable[[int], None]:
        for task in self.progress.tasks:
            self.progress.remove_task(task.id)
        self.say(title)
        if total is None:
            self.progress.stop()
            return lambda n: None
        self.progress.start()
        task = self.progress.add_task("", total=total)
        return lambda n: self.progress.advance(task, n)

    def close(self) -> None:
        self.progress.stop()

    def _clock(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 60:2d}:{seconds % 60:02d}"


def demo(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the report, the stores and the logs.")
    ] = Path("distillguard-demo"),
    quick: Annotated[
        bool, typer.Option("--quick", help="A smaller run (~3 min), as CI runs it.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed, the same traffic.")] = 0,
) -> None:
    """Run the whole defence on a simulated day: two providers and a hub, watermarked
    answers, limits, online tracing, shared signals and a distilled student; then write
    an HTML report. Exits 1 if an outcome was not met."""
    from distillguard.demo.report import write_report
    from distillguard.demo.run import run

    shown = _Screen()
    try:
        result = run(out, quick=quick, seed=seed, screen=shown)
    finally:
        shown.close()
    report = write_report(result)
    table = Table("outcome", "met", "measured", title="distillguard demo (simulated traffic)")
    for outcome in result.outcomes:
        table.add_row(
            outcome.claim,
            "[green]yes[/green]" if outcome.met else "[red]NO[/red]",
            outcome.measured,
        )
    screen.print(table)
    screen.print(f"report: {report}  ({result.seconds['total'] / 60:.1f} min)", soft_wrap=True)
    screen.print(
        "console on provider A's store: "
        f"DISTILLGUARD_GATEWAY__ADMIN_TOKEN=$(cat {out / 'admin-token'}) "
        "distillguard serve --engine bundled "
        f"--watermark-key {out / 'watermark-key.json'} "
        f"--store sqlite:///{(out / 'provider-a.db').resolve()}  then http://127.0.0.1:8000/admin/",
        soft_wrap=True,
    )
    if not result.ok:
        raise typer.Exit(EXIT_NOT_MET)
