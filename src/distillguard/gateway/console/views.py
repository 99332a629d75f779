"""What each console page shows, as plain data: the HTML templates render it and the admin
API answers it as JSON, so an operator's script sees exactly what the page does.

Every view reads the store directly (blocking: the routes run these in a thread) and is
bounded: pages of accounts, the newest decisions, the latest trace run's clusters.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine

from distillguard import metrics
from distillguard.exchange.watchlist import sync_status
from distillguard.gateway.console.graph import layout
from distillguard.policy import TIERS
from distillguard.store import AccountStore, EventStore, ScoreStore, SuspectStore

PAGE = 100  # accounts per page
HOUR, DAY = 3600.0, 86_400.0


class Views:
    def __init__(self, engine: Engine) -> None:
        self.accounts = AccountStore(engine)
        self.events = EventStore(engine)
        self.scores = ScoreStore(engine)
        self.suspects = SuspectStore(engine)
        self.engine = engine

    def overview(self) -> dict[str, Any]:
        run_id = self.scores.latest_run()
        verdicts = self.suspects.recent(1)
        return {
            "tiers": self.accounts.tier_counts(),
            "trace_run": self.scores.run(run_id) if run_id is not None else None,
            "refusals_last_hour": self._by_scope(time.time() - HOUR),
            "recent_tier_changes": self.accounts.tier_history(limit=10),
            "hub": sync_status(self.engine),
            "latest_suspect_test": _verdict(verdicts[0]) if verdicts else None,
        }

    def accounts_page(
        self, tier: str | None = None, prefix: str | None = None, page: int = 1
    ) -> dict[str, Any]:
        run_id = self.scores.latest_run()
        total, rows = self.scores.ranked(run_id, tier, prefix, PAGE, (page - 1) * PAGE)
        return {
            "run_id": run_id,
            "tier": tier,
            "prefix": prefix,
            "page": page,
            "pages": max(1, -(-total // PAGE)),
            "total": total,
            "accounts": rows,
        }

    def account(self, account_id: str) -> dict[str, Any]:
        """One account: tier and why, limits, keys, latest score and evidence, its tier
        history and recent decisions. Unknown: `UnknownIdError` (answered 404)."""
        view = self.accounts.account(account_id).public()
        return {
            **view,
            "score": self.scores.latest_score(account_id),
            "tier_history": self.accounts.tier_history(account_id, limit=20),
            "recent_requests": self.events.recent(20, account_id=account_id),
            "tiers": list(TIERS),
        }

    def operations(self) -> dict[str, Any]:
        run_id = self.scores.latest_run()
        clusters = self.scores.clusters(run_id) if run_id is not None else []
        return {"run_id": run_id, "clusters": clusters}

    def operation(self, cluster_id: str) -> dict[str, Any] | None:
        """One cluster of the latest run with its graph; None if the run has no such one."""
        run_id = self.scores.latest_run()
        cluster = self.scores.cluster(run_id, cluster_id) if run_id is not None else None
        if cluster is None:
            return None
        members = self.scores.ranked_members(run_id, cluster["accounts"])
        tiers = {m["account_id"]: m["tier"] for m in members}
        return {
            "run_id": run_id,
            **cluster,
            "members": members,
            "graph": layout(cluster["accounts"], cluster["ties"], tiers),
        }

    def limits(self) -> dict[str, Any]:
        now = time.time()
        return {
            "last_hour": self._by_scope(now - HOUR),
            "last_day": self._by_scope(now - DAY),
            "recent_refusals": self.events.recent(50, refused_only=True),
        }

    def suspect_tests(self) -> dict[str, Any]:
        return {"results": [_verdict(row) for row in self.suspects.recent(50)]}

    def hub(self) -> dict[str, Any]:
        return sync_status(self.engine)

    def metrics(self) -> dict[str, Any]:
        return {"metrics": metrics.snapshot()}

    def _by_scope(self, since: float) -> list[dict[str, Any]]:
        """Refusals since `since` by the limit's scope and kind (`account:<id>:tokens`:
        account, tokens), the account's tier and the mode; largest first."""
        found: dict[tuple, int] = {}
        for row in self.events.decision_counts(since):
            if row["refused_by"] is None:
                continue
            scope, _, rest = row["refused_by"].partition(":")
            kind = rest.rpartition(":")[2] or scope
            mode = "shadow" if row["shadow"] else "enforced"
            key = (scope, kind, row["tier"] or "-", mode)
            found[key] = found.get(key, 0) + row["requests"]
        return [
            {"scope": s, "kind": k, "tier": t, "mode": m, "requests": n}
            for (s, k, t, m), n in sorted(found.items(), key=lambda item: -item[1])
        ]


def _verdict(row: dict[str, Any]) -> dict[str, Any]:
    verdict = row["verdict"]
    return {
        "id": row["id"],
        "ts": row["ts"],
        "suspect": row["suspect"],
        "verdict": verdict.get("verdict"),
        "p_value": verdict.get("p_value"),
        "named_cohorts": verdict.get("named_cohorts", []),
        "control_p_value": (verdict.get("control") or {}).get("p_value"),
        "mode": verdict.get("mode"),
        "scored": verdict.get("scored"),
    }
