"""Suspect-test verdicts kept for the record and the operators' console."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, insert, select

from distillguard.store.schema import suspect_results


class SuspectStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def save(self, suspect: str, verdict: dict[str, Any]) -> int:
        """Keep one verdict (the document `suspect test` prints) under what was tested."""
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    insert(suspect_results).values(ts=time.time(), suspect=suspect, verdict=verdict)
                ).inserted_primary_key[0]
            )

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest verdicts first."""
        query = select(suspect_results).order_by(suspect_results.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]
