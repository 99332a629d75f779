"""Tracing results in the store: each run, and the account and cluster scores it produced."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, func, insert, select

from distillguard.store.schema import (
    account_scores,
    accounts,
    cluster_scores,
    cluster_ties,
    trace_runs,
)
from distillguard.store.sql import select_in


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
            kept = cluster_scores.c.keys()
            rows = [
                {"run_id": run_id, **{k: v for k, v in c.items() if k in kept}} for c in clusters
            ]
            for start in range(0, len(rows), chunk):
                conn.execute(insert(cluster_scores), rows[start : start + chunk])
            rows = [
                {"run_id": run_id, "cluster_id": c["cluster_id"], "seq": seq, **tie}
                for c in clusters
                for seq, tie in enumerate(c.get("ties", ()))
            ]
            for start in range(0, len(rows), chunk):
                conn.execute(insert(cluster_ties), rows[start : start + chunk])
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

    def ranked(
        self,
        run_id: int | None,
        tier: str | None = None,
        prefix: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[int, list[dict[str, Any]]]:
        """Accounts by risk: the run's score, highest first (unscored last), with each
        account's tier and its reason; filtered by tier or by an id prefix. Returns the
        number matching and one page of them."""
        scored = account_scores.c
        query = select(
            accounts.c.account_id,
            accounts.c.org_id,
            accounts.c.tier,
            accounts.c.tier_reason,
            accounts.c.updated_at,
            scored.score,
            scored.flagged,
            scored.cluster_id,
            scored.evidence,
        ).outerjoin(
            account_scores,
            (scored.account_id == accounts.c.account_id) & (scored.run_id == (run_id or -1)),
        )
        if tier is not None:
            query = query.where(accounts.c.tier == tier)
        if prefix:
            query = query.where(accounts.c.account_id.startswith(prefix, autoescape=True))
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(query.subquery())).scalar()
            page = conn.execute(
                query.order_by(scored.score.is_(None), scored.score.desc(), accounts.c.account_id)
                .limit(limit)
                .offset(offset)
            ).mappings()
            return int(total or 0), [dict(row) for row in page]

    def ranked_members(self, run_id: int, account_ids: list[str]) -> list[dict[str, Any]]:
        """The run's scores of `account_ids` with their tiers (None: not in this store),
        highest first."""
        query = (
            select(
                account_scores.c.account_id,
                account_scores.c.score,
                account_scores.c.flagged,
                accounts.c.tier,
                accounts.c.tier_reason,
            )
            .outerjoin(accounts, accounts.c.account_id == account_scores.c.account_id)
            .where(account_scores.c.run_id == run_id)
        )
        with self.engine.connect() as conn:
            rows = select_in(conn, query, account_scores.c.account_id, account_ids)
        found = [dict(row._mapping) for row in rows]
        return sorted(found, key=lambda r: (-r["score"], r["account_id"]))

    def run(self, run_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(trace_runs).where(trace_runs.c.run_id == run_id)).first()
        return dict(row._mapping) if row is not None else None

    def clusters(self, run_id: int, limit: int = 200) -> list[dict[str, Any]]:
        """The run's clusters, flagged first, then by score and size."""
        query = (
            select(cluster_scores)
            .where(cluster_scores.c.run_id == run_id)
            .order_by(
                cluster_scores.c.flagged.desc(),
                cluster_scores.c.score.desc(),
                cluster_scores.c.cluster_id,
            )
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def cluster(self, run_id: int, cluster_id: str) -> dict[str, Any] | None:
        """One cluster of the run with the groups that tie its members (`ties`)."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(cluster_scores).where(
                        cluster_scores.c.run_id == run_id, cluster_scores.c.cluster_id == cluster_id
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            ties = conn.execute(
                select(cluster_ties.c.kind, cluster_ties.c.accounts)
                .where(cluster_ties.c.run_id == run_id, cluster_ties.c.cluster_id == cluster_id)
                .order_by(cluster_ties.c.seq)
            ).mappings()
            return {**row, "ties": [dict(t) for t in ties]}

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
