"""Persistence: API keys, accounts, organisations, request events and tracing scores
(SQLite or PostgreSQL)."""

from distillguard.store.accounts import (
    AccountError,
    AccountStore,
    IssuedKey,
    KeyRecord,
    UnknownIdError,
    parse_api_key,
)
from distillguard.store.database import StoreError, default_store_url, open_engine
from distillguard.store.events import Event, EventStore
from distillguard.store.scores import ScoreStore
from distillguard.store.suspects import SuspectStore

__all__ = [
    "AccountError",
    "AccountStore",
    "Event",
    "EventStore",
    "IssuedKey",
    "KeyRecord",
    "ScoreStore",
    "StoreError",
    "SuspectStore",
    "UnknownIdError",
    "default_store_url",
    "open_engine",
    "parse_api_key",
]
