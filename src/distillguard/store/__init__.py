"""Persistence: API keys, accounts, organisations and request events (SQLite or PostgreSQL)."""

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

__all__ = [
    "AccountError",
    "AccountStore",
    "Event",
    "EventStore",
    "IssuedKey",
    "KeyRecord",
    "StoreError",
    "UnknownIdError",
    "default_store_url",
    "open_engine",
    "parse_api_key",
]
