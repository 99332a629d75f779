"""Tracing results in the store: each run, and the account and cluster scores it produced."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, func, insert, select

from distillguard.store.schema import account_scores, cluster_scores, trace_runs


class ScoreStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def save_run(
        self, source: str, document: dict[str, Any], events: int, chunk: int = 5000
    ) -> int:
        """Write one run's `--json` document in a single transaction; returns its run id.

        All of it or none of it: a failure part-way leaves no half-written run.
        """
        accounts, clusters = document["accounts"], document["clusters"]
        with self.engine.begin() as conn:
            run_id = conn.execute(
                insert(trace_runs).values(
                    finished_at=time.time(),
                    source=source,
                    events=events,
                    accounts=len(accounts),
                    flagged_accounts=sum(a["flagged"] for a in accounts),
                    clusters=len(clusters),
                )
            ).inserted_primary_key[0]
            # The table keeps what tiers and publishing read; the document says more.
            kept = account_scores.c.keys()
            rows = [
                {"run_id": run_id, **{k: v for k, v in a.items() if k in kept}} for a in accounts
            ]
            for start in range(0, len(rows), chunk):
                conn.execute(insert(account_scores), rows[start : start + chunk])
            rows = [{"run_id": run_id, **c} for c in clusters]
            for start in range(0, len(rows), chunk):
                conn.execute(insert(cluster_scores), rows[start : start + chunk])
        return int(run_id)

    def latest_run(self) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(select(func.max(trace_runs.c.run_id))).scalar()

    def latest_score(self, account_id: str) -> dict[str, Any] | None:
        """The account's row in the newest run that scored it, with that run's time and
        source; None if no run has."""
        query = (
            select(account_scores, trace_runs.c.finished_at, trace_runs.c.source)
            .join(trace_runs, trace_runs.c.run_id == account_scores.c.run_id)
            .where(account_scores.c.account_id == account_id)
            .order_by(account_scores.c.run_id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row is not None else None

    def account_scores(self, run_id: int) -> list[dict[str, Any]]:
        query = (
            select(account_scores)
            .where(account_scores.c.run_id == run_id)
            .order_by(account_scores.c.score.desc(), account_scores.c.account_id)
        )
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def flagged(self, run_id: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The run's flagged accounts and flagged clusters, highest score first."""
        with self.engine.connect() as conn:
            found = []
            for table in (account_scores, cluster_scores):
                query = (
                    select(table)
                    .where(table.c.run_id == run_id, table.c.flagged)
                    .order_by(table.c.score.desc())
                )
                found.append([dict(row) for row in conn.execute(query).mappings()])
        return found[0], found[1]
