"""SQL that every store here shares: portable column types and chunked `IN` lists.

The gateway's store and the exchange hub's (its own database) declare their tables with
the same column types and look up many keys the same way, so that both behave alike on
SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from sqlalchemy import JSON, BigInteger, Column, Connection, Integer, Select, delete
from sqlalchemy.dialects.postgresql import JSONB

# JSONB on PostgreSQL, so that outside tools can query the documents.
Json = JSON().with_variant(JSONB(), "postgresql")
Id = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only

CHUNK = 500  # keys per IN (...) list: SQLite's bound-parameter limit is far above

K = TypeVar("K")


def chunks(keys: Iterable[K]) -> Iterator[list[K]]:
    """`keys` in lists of at most CHUNK (none for no keys)."""
    keys = list(keys)
    for start in range(0, len(keys), CHUNK):
        yield keys[start : start + CHUNK]


def select_in(conn: Connection, query: Select, column: Column, keys: Iterable) -> list[Any]:
    """The rows of `query` where `column IN keys`, a chunk of keys per statement."""
    rows: list[Any] = []
    for chunk in chunks(keys):
        rows += conn.execute(query.where(column.in_(chunk))).all()
    return rows


def delete_in(conn: Connection, column: Column, keys: Iterable) -> None:
    """Delete the rows of `column`'s table where `column IN keys`, a chunk at a time."""
    for chunk in chunks(keys):
        conn.execute(delete(column.table).where(column.in_(chunk)))
