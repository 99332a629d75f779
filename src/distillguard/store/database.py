"""Opening the store: one SQLAlchemy engine per URL, tables created on first use.

SQLite (the embedded default) runs in WAL mode so the gateway's event writer
and readers (CLI export, tracing) never block each other; PostgreSQL is used as
is. Only URLs we test are accepted, so a typo fails here with one clear line.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import platformdirs
from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from distillguard.errors import DistillguardError
from distillguard.store.schema import metadata

SUPPORTED = ("sqlite", "postgresql")


class StoreError(DistillguardError):
    """The store URL is malformed, unsupported or the database is unreachable."""


def default_store_url() -> str:
    path = platformdirs.user_data_path("distillguard") / "distillguard.db"
    return f"sqlite:///{path}"


def open_engine(url: str, schema: MetaData = metadata) -> Engine:
    """An engine for `url` with the schema in place (the gateway's, or another service's
    such as the exchange hub's)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"store URL {url!r} is not a database URL") from None
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED:
        raise StoreError(f"store URL {url!r}: use sqlite:///PATH or postgresql://HOST/DB")
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # the driver we ship
    if backend == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = create_engine(
            parsed,
            pool_pre_ping=backend == "postgresql",
            # Events carry whole requests as JSON: msgspec encodes them ~5x faster than json.
            json_serializer=_json_text,
            json_deserializer=msgspec.json.decode,
        )
    except (ArgumentError, ImportError) as exc:
        raise StoreError(f"store URL {url!r}: {exc}") from None
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        schema.create_all(engine)
    except SQLAlchemyError as exc:
        where = parsed.render_as_string()  # password hidden
        raise StoreError(f"cannot open the store {where}: {_first_line(exc)}") from None
    return engine


def _json_text(value: object) -> str:
    return msgspec.json.encode(value).decode()


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL keeps it safe
    cursor.execute("PRAGMA busy_timeout=5000")  # CLI and gateway may write at once
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().split("\n")[0]
