"""The tables, in one place: SQLite by default, PostgreSQL by URL (SQLAlchemy Core).

Columns are portable types; JSON columns become JSONB on PostgreSQL so outside
tools can query them. `docs/events.md` documents the `events` table field by
field; keep the two together.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()
Json = JSON().with_variant(JSONB(), "postgresql")
Id = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only


def limit_columns() -> list[Column]:
    """rpm, tpm, tpd, concurrency; NULL means the configured default for that level."""
    return [
        Column("rpm", Integer),
        Column("tpm", Integer),
        Column("tpd", BigInteger),
        Column("concurrency", Integer),
    ]


organizations = Table(
    "organizations",
    metadata,
    Column("org_id", String(128), primary_key=True),
    *limit_columns(),
    Column("updated_at", Float, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("account_id", String(128), primary_key=True),
    Column("org_id", String(128), nullable=True),
    Column("tier", String(16), nullable=False, default="normal"),
    Column("tier_reason", Text),
    *limit_columns(),
    Column("updated_at", Float, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("secret_sha256", String(64), nullable=False),  # never the secret itself
    Column("account_id", String(128), ForeignKey("accounts.account_id"), nullable=False),
    Column("org_id", String(128), nullable=True),
    Column("name", String(128)),
    *limit_columns(),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
)

events = Table(
    "events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("account_id", String(128)),
    Column("org_id", String(128)),
    Column("key_id", String(32)),
    Column("client_ip", String(64)),
    Column("user_agent", Text),
    Column("model", String(256)),
    Column("endpoint", String(64), nullable=False),
    Column("request", Json),
    Column("response_text", Text),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("status", Integer, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("decision", String(32), nullable=False),
    Column("refused_by", String(64)),
    Column("tier", String(16)),
    Column("shadow", Boolean, nullable=False, default=False),
    Column("stream", Boolean, nullable=False, default=False),
    Column("cohort", Integer),
    Column("error", Text),
)
Index("events_ts", events.c.ts)
Index("events_account_ts", events.c.account_id, events.c.ts)

# Tracing results: one row per `trace run`, then one per account and per cluster it scored.
# Earlier runs are kept, so a tier change can always be traced to the run that caused it.
trace_runs = Table(
    "trace_runs",
    metadata,
    Column("run_id", Id, primary_key=True, autoincrement=True),
    Column("finished_at", Float, nullable=False),
    Column("source", Text, nullable=False),  # the events file, or "store"
    Column("events", BigInteger, nullable=False),
    Column("accounts", Integer, nullable=False),
    Column("flagged_accounts", Integer, nullable=False),
    Column("clusters", Integer, nullable=False),
)
account_scores = Table(
    "account_scores",
    metadata,
    Column("run_id", Id, ForeignKey("trace_runs.run_id"), primary_key=True),
    Column("account_id", String(128), primary_key=True),
    Column("score", Float, nullable=False),
    Column("flagged", Boolean, nullable=False),
    Column("cluster_id", String(32)),
    Column("flagged_after_requests", Integer),
    Column("evidence", Json, nullable=False),
)
cluster_scores = Table(
    "cluster_scores",
    metadata,
    Column("run_id", Id, ForeignKey("trace_runs.run_id"), primary_key=True),
    Column("cluster_id", String(32), primary_key=True),
    Column("score", Float, nullable=False),
    Column("flagged", Boolean, nullable=False),
    Column("accounts", Json, nullable=False),
    Column("evidence", Json, nullable=False),
)
Index("account_scores_account", account_scores.c.account_id, account_scores.c.run_id)
