"""Opening the store: one SQLAlchemy engine per URL, tables created on first use.

SQLite (the embedded default) runs in WAL mode so the gateway's event writer
and readers (CLI export, tracing) never block each other; PostgreSQL is used as
is. Only URLs we test are accepted, so a typo fails here with one clear line.

Errors carry prompts, IPs and key ids no further: parameters are hidden from
SQLAlchemy's messages, PostgreSQL's DETAIL (which repeats row values) is dropped from
the error text, URLs are shown with their password masked, and new SQLite files and
folders are the owner's only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import msgspec
import platformdirs
from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.engine import URL, make_url
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
    except (ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
        raise StoreError(f"store URL {masked_url(url)} is not a database URL") from None
    where = parsed.render_as_string(hide_password=True)
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED:
        raise StoreError(f"store URL {where}: use sqlite:///PATH or postgresql://HOST/DB")
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # the driver we ship
    if backend == "sqlite":
        _create_private(parsed, where)
    try:
        engine = create_engine(
            parsed,
            pool_pre_ping=backend == "postgresql",
            hide_parameters=True,  # parameters are prompts, IPs and key ids: never in logs
            # Events carry whole requests as JSON: msgspec encodes them ~5x faster than json.
            json_serializer=_json_text,
            json_deserializer=msgspec.json.decode,
        )
    except (ArgumentError, ImportError) as exc:
        raise StoreError(f"store URL {where}: {exc}") from None
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        event.listen(engine, "handle_error", _primary_message_only)
    try:
        schema.create_all(engine)
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot open the store {where}: {_first_line(exc)}") from None
    return engine


def masked_url(url: str) -> str:
    """`url` for a message, its password masked (everything before its `@` when it does
    not parse, as a password with odd characters may be why)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"(?<=://).*@", "***@", url)


def _create_private(url: URL, where: str) -> None:
    """Create the SQLite file (0600) and its missing folders (0700) ourselves, whatever the
    umask: they hold prompts, IPs and key hashes. SQLite gives its -wal and -shm files the
    database file's mode. What exists already is left as it is."""
    if not url.database or url.database == ":memory:" or url.query.get("uri"):
        return
    path = Path(url.database).expanduser()
    try:
        for folder in reversed([p for p in path.parents if not p.exists()]):
            try:
                folder.mkdir(mode=0o700)
            except FileExistsError:  # another process made it first
                continue
            folder.chmod(0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"cannot create the store {where}: {exc.strerror}") from None
    os.close(fd)
    path.chmod(0o600)


def _primary_message_only(context) -> None:
    """PostgreSQL's DETAIL repeats values ("Failing row contains (…)"): keep the primary
    message in the error's text (`.diag` keeps the rest for code that asks)."""
    original, wrapped = context.original_exception, context.sqlalchemy_exception
    primary = getattr(getattr(original, "diag", None), "message_primary", None)
    if not primary:
        return
    full, original.args = str(original), (primary,)
    if wrapped is not None and wrapped.args:  # its text was built from the full message
        wrapped.args = (str(wrapped.args[0]).replace(full, primary, 1), *wrapped.args[1:])


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
