"""Authentication: Bearer API keys checked against an in-memory copy of the key table.

The hot path never touches the database: a background task reloads the
active keys (with their account tiers and limits) every few seconds, so a key
revoked or a tier changed on any replica (or by the CLI) takes effect
everywhere within `key_refresh_seconds`; the admin API on this replica
refreshes at once.

The reload loop survives any failure (the last good copy keeps serving, the failure
is logged at most once per interval) and says whether it is keeping up: `healthy`
and `last_refresh`, for a health check to read.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time

from sqlalchemy.exc import SQLAlchemyError

from distillguard.gateway.errors import ApiError
from distillguard.gateway.throttled_log import ThrottledLog
from distillguard.store import AccountStore, KeyRecord, parse_api_key

log = logging.getLogger(__name__)
STALE_INTERVALS = 3  # reloads missed in a row before the key table counts as stale
STALE_FLOOR_SECONDS = 5.0  # ...and never sooner: a busy event loop is not a broken one


class KeyRing:
    def __init__(self, accounts: AccountStore, refresh_seconds: float = 2.0) -> None:
        self.accounts = accounts
        self.refresh_seconds = refresh_seconds
        self.last_refresh: float | None = None  # unix time of the last successful reload
        self._refreshed_at = -float("inf")  # the same, monotonic
        self._keys: dict[str, KeyRecord] = {}
        self._task: asyncio.Task | None = None
        self._failures = ThrottledLog(log)

    @property
    def healthy(self) -> bool:
        """Whether revocations still arrive: the loop runs and a reload succeeded within
        the last STALE_INTERVALS intervals (at least STALE_FLOOR_SECONDS)."""
        running = self._task is not None and not self._task.done()
        age = time.monotonic() - self._refreshed_at
        return running and age <= max(STALE_INTERVALS * self.refresh_seconds, STALE_FLOOR_SECONDS)

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._refresh_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def refresh(self) -> None:
        self._keys = await asyncio.to_thread(self.accounts.active_keys)
        self._refreshed_at, self.last_refresh = time.monotonic(), time.time()

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await self.refresh()
            except Exception as exc:  # anything: keep serving the last good copy, retry
                self._failures.error(
                    "key refresh failed, keeping the previous keys: %s: %s",
                    type(exc).__name__,
                    exc,
                    exc_info=not isinstance(exc, SQLAlchemyError),  # a bug: its traceback
                )

    def authenticate(self, authorization: str | None) -> KeyRecord:
        """The key record for an ``Authorization: Bearer`` header, or a 401."""
        if not authorization:
            raise ApiError(
                401,
                "no API key provided: send it as `Authorization: Bearer dg-…`",
                "missing_api_key",
            )
        scheme, _, token = authorization.partition(" ")
        parsed = parse_api_key(token.strip()) if scheme.lower() == "bearer" else None
        record = self._keys.get(parsed[0]) if parsed else None
        if record is None or not record.matches(parsed[1]):
            raise ApiError(401, "invalid or revoked API key", "invalid_api_key")
        return record


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether an Authorization header carries `token` as a Bearer token (constant time)."""
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )
