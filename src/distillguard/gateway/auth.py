"""Authentication: Bearer API keys checked against an in-memory copy of the key table.

The hot path never touches the database: a background task reloads the
active keys (with their account tiers and limits) every few seconds, so a key
revoked or a tier changed on any replica (or by the CLI) takes effect
everywhere within `key_refresh_seconds`; the admin API on this replica
refreshes at once.
"""

from __future__ import annotations

import asyncio
import hmac
import logging

from sqlalchemy.exc import SQLAlchemyError

from distillguard.gateway.errors import ApiError
from distillguard.store import AccountStore, KeyRecord, parse_api_key

log = logging.getLogger(__name__)


class KeyRing:
    def __init__(self, accounts: AccountStore, refresh_seconds: float = 2.0) -> None:
        self.accounts = accounts
        self.refresh_seconds = refresh_seconds
        self._keys: dict[str, KeyRecord] = {}
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._refresh_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def refresh(self) -> None:
        self._keys = await asyncio.to_thread(self.accounts.active_keys)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await self.refresh()
            except SQLAlchemyError as exc:  # keep serving with the last good copy
                log.warning("key refresh failed, keeping the previous keys: %s", exc)

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
