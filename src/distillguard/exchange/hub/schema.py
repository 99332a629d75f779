"""The hub's tables (its own database: a hub is run by a consortium, not by a gateway)."""

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

from distillguard.store.sql import Id, Json  # the column types the gateway store uses too

metadata = MetaData()

collections = Table(
    "hub_collections",
    metadata,
    Column("collection_id", String(64), primary_key=True),  # a UUID, as TAXII asks
    Column("name", String(128), nullable=False, unique=True),
    Column("description", Text),
    Column("created_at", Float, nullable=False),
)

members = Table(
    "hub_members",
    metadata,
    Column("member_id", String(128), primary_key=True),  # the name given at `member add`
    Column("org", String(128), nullable=False),  # TLP:AMBER+STRICT stays within it
    Column("token_sha256", String(64), nullable=False, unique=True),  # never the token
    Column("anonymous", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),
    Column("revoked_at", Float),
)

rights = Table(
    "hub_rights",
    metadata,
    Column("member_id", String(128), ForeignKey("hub_members.member_id"), primary_key=True),
    Column(
        "collection_id",
        String(64),
        ForeignKey("hub_collections.collection_id"),
        primary_key=True,
    ),
    Column("can_read", Boolean, nullable=False),
    Column("can_write", Boolean, nullable=False),
)

# One row per version of an object in a collection. `added_us` (µs since the epoch) orders
# and pages the collection; `version` is the object's `modified` (else `created`, else
# the time it was added), as TAXII defines it.
objects = Table(
    "hub_objects",
    metadata,
    Column("seq", Id, primary_key=True, autoincrement=True),
    Column(
        "collection_id", String(64), ForeignKey("hub_collections.collection_id"), nullable=False
    ),
    Column("object_id", String(128), nullable=False),
    Column("type", String(64), nullable=False),
    Column("version", String(40), nullable=False),
    Column("spec_version", String(8), nullable=False),
    Column("added_us", BigInteger, nullable=False),
    Column("publisher", String(128), nullable=False),  # kept even when shown anonymously
    Column("publisher_org", String(128), nullable=False),
    Column("tlp", String(16)),
    Column("body", Text, nullable=False),  # the JSON served, byte for byte
)
Index("hub_objects_page", objects.c.collection_id, objects.c.added_us, objects.c.seq)
Index(
    "hub_objects_id", objects.c.collection_id, objects.c.object_id, objects.c.version, unique=True
)

statuses = Table(
    "hub_statuses",
    metadata,
    Column("status_id", String(64), primary_key=True),
    Column("member_id", String(128), nullable=False),
    Column("request_us", BigInteger, nullable=False),
    Column("total", Integer, nullable=False),
    Column("successes", Json, nullable=False),  # [{"id", "version", "message"?}]
    Column("failures", Json, nullable=False),
)

audit = Table(
    "hub_audit",
    metadata,
    Column("seq", Id, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("member_id", String(128)),
    Column("action", String(32), nullable=False),  # publish, read, refuse, ...
    Column("collection_id", String(64)),
    Column("detail", Json, nullable=False),
)

# -- corroboration (exchange/hub/corroboration.py) ----------------------------------------
# What counting the reports of an indicator needs, kept up to date by every envelope in
# its own transaction. A row extends the hub_objects row of the same `seq` (one version of
# an indicator or sighting; publisher, TLP, version and date added are there): keyed by an
# increasing number, the table grows at its end, which keeps ingest fast. Of each
# object, the hub flags two versions: the latest that every member of the collection may
# read (TLP:CLEAR, GREEN, AMBER or unmarked), which is what the object reports
# (`is_report`), and its latest of all, which is what the hub corroborates (`is_target`).
# No foreign keys: the hub writes these rows itself, in the transaction that writes their
# objects, and checking would cost a lookup per row.
reports = Table(
    "hub_reports",
    metadata,
    Column("seq", Id, primary_key=True, autoincrement=False),  # hub_objects.seq
    Column("collection_id", String(64), nullable=False),
    Column("is_report", Boolean, nullable=False),
    Column("is_target", Boolean, nullable=False),
    Column("confidence", Integer),
    Column("revoked", Boolean, nullable=False),
    Column("sighting_of", String(128)),  # a sighting's sighting_of_ref
    Column("first_us", BigInteger, nullable=False),  # when the object was first added
)
Index("hub_reports_sighting_of", reports.c.collection_id, reports.c.sighting_of)

# The values of indicator versions' patterns (exchange/hub/corroboration.py), as 128-bit
# digests in hex: fixed width, so indexable on PostgreSQL however long a MinHash pattern.
values = Table(
    "hub_values",
    metadata,
    Column("value", String(32), primary_key=True),
    Column("seq", Id, primary_key=True, autoincrement=False),  # hub_objects.seq
)
Index("hub_values_seq", values.c.seq)

# The hub's own sighting of each corroborated indicator (its id is corroboration_id of the
# indicator): when it was created, its latest version, and what that version says (a new
# version is written only on a change).
corroborations = Table(
    "hub_corroborations",
    metadata,
    Column(
        "collection_id",
        String(64),
        ForeignKey("hub_collections.collection_id"),
        primary_key=True,
    ),
    Column("indicator_id", String(128), primary_key=True),
    Column("created_us", BigInteger, nullable=False),
    Column("version_us", BigInteger, nullable=False),
    Column("state", Json, nullable=False),
)
