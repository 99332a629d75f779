"""The tables, in one place: SQLite by default, PostgreSQL by URL (SQLAlchemy Core).

Columns are portable types; JSON columns become JSONB on PostgreSQL so outside
tools can query them. `docs/events.md` documents the `events` table field by
field; keep the two together.
"""

from __future__ import annotations

from sqlalchemy import (
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

from distillguard.store.sql import Id, Json

metadata = MetaData()


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
# What ties a cluster's members to one operator (a card, a signup IP, a synchronised pair):
# one row per group of members holding one such thing, its kind named, its value never kept.
cluster_ties = Table(
    "cluster_ties",
    metadata,
    Column("run_id", Id, ForeignKey("trace_runs.run_id"), primary_key=True),
    Column("cluster_id", String(32), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("accounts", Json, nullable=False),
)

# Every tier change, whoever made it (an operator, tracing, the exchange): the audit trail
# behind an account's tier.
tier_changes = Table(
    "tier_changes",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("account_id", String(128), nullable=False),
    Column("old_tier", String(16)),
    Column("new_tier", String(16), nullable=False),
    Column("reason", Text),
    Column("actor", String(128), nullable=False),  # "console 127.0.0.1", "tracing", ...
)
Index("tier_changes_account", tier_changes.c.account_id, tier_changes.c.ts)

# `suspect test --save`: each verdict, for the console and the record.
suspect_results = Table(
    "suspect_results",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("suspect", Text, nullable=False),  # what was tested: a URL and model, or weights
    Column("verdict", Json, nullable=False),  # the verdict document, as `suspect test` prints
)

# The exchange client (docs/exchange.md). An account's identifiers are kept only as
# consortium-keyed hashes ("<key id>:<hex HMAC>", one per key held), never in the clear:
# matching shared indicators is all the gateway needs them for.
account_identifiers = Table(
    "account_identifiers",
    metadata,
    Column("account_id", String(128), ForeignKey("accounts.account_id"), primary_key=True),
    Column("hash", String(100), primary_key=True),
    Column("kind", String(16), nullable=False),  # email, phone, payment
    Column("added_at", Float, nullable=False),
)
Index("account_identifiers_hash", account_identifiers.c.hash)

# Other members' indicators, one row per value an indicator matches on (an identifier
# hash, a keyed template signature, a network); a newer version replaces its rows.
watchlist = Table(
    "watchlist",
    metadata,
    Column("indicator_id", String(128), primary_key=True),
    Column("value", String(512), primary_key=True),
    Column("kind", String(16), nullable=False),  # account, template, network
    Column("confidence", Float, nullable=False),  # the publisher's, in [0, 1]
    Column("modified", Float, nullable=False),  # its version (STIX `modified`)
    Column("reported_at", Float, nullable=False),  # decay counts from here: modified, or now
    Column("valid_until", Float),
    Column("publisher", String(128)),  # a STIX identity id (the hub's, if anonymous)
    Column("pulled_at", Float, nullable=False),
)
Index("watchlist_value", watchlist.c.value)

# The hub's corroboration of an indicator: how many members reported it, and their
# combined confidence (never who they are). It may arrive before its indicator.
watchlist_corroboration = Table(
    "watchlist_corroboration",
    metadata,
    Column("indicator_id", String(128), primary_key=True),
    Column("members", Integer, nullable=False),
    Column("confidence", Float, nullable=False),
    Column("modified", Float, nullable=False),  # the hub's version of it
    Column("last_seen", Float, nullable=False),  # the last report: decay counts from here
)

# Where each pull stopped (the hub's X-TAXII-Date-Added-Last), per collection URL.
exchange_cursors = Table(
    "exchange_cursors",
    metadata,
    Column("collection_url", String(512), primary_key=True),
    Column("added_after", String(40), nullable=False),
    Column("pulled_at", Float, nullable=False),
)

# What this member has published, so that publishing after every trace run sends only
# what is new: "account:<id>", "cluster:<digest of its member indicators>" or
# "template:<signature>".
exchange_published = Table(
    "exchange_published",
    metadata,
    Column("subject", String(600), primary_key=True),
    Column("stix_id", String(128), nullable=False),
    Column("published_at", Float, nullable=False),
)
