"""Persistence: API keys, accounts, organisations and request events (SQLite or PostgreSQL)."""

from distillguard.store.accounts import (
    AccountError,
    AccountStore,
    IssuedKey,
    KeyRecord,
    parse_api_key,
)
from distillguard.store.database import StoreError, default_store_url, open_engine
from distillguard.store.events import EVENT_FIELDS, Event, EventStore

__all__ = [
    "EVENT_FIELDS",
    "AccountError",
    "AccountStore",
    "Event",
    "EventStore",
    "IssuedKey",
    "KeyRecord",
    "StoreError",
    "default_store_url",
    "open_engine",
    "parse_api_key",
]
