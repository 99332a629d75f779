"""API keys, accounts and organisations: issuing, revoking, listing, risk tiers.

An API key reads ``dg-<key id>-<secret>``. Only SHA-256 of the secret is
stored: the secret is 256 random bits, so a slow password hash would add
latency to every request without adding security. The key id is public (it
appears in logs and events) and lets the gateway find the record without
scanning.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, func, insert, select, update

from distillguard.errors import DistillguardError
from distillguard.policy import MAX_LIMIT, TIERS, Limits
from distillguard.store.schema import accounts, api_keys, organizations, tier_changes

KEY_PREFIX = "dg"
LIMIT_COLUMNS = tuple(MAX_LIMIT)  # rpm, tpm, tpd, concurrency: one list, in policy.py


class AccountError(DistillguardError):
    """A request the account store cannot carry out (invalid tier, conflicting org, …)."""


class UnknownIdError(AccountError):
    """A key, account or organisation id that names nothing."""


@dataclass(frozen=True)
class KeyRecord:
    """What the gateway needs to authenticate a key and apply its limits."""

    key_id: str
    secret_sha256: str
    account_id: str
    org_id: str | None
    name: str | None
    created_at: float
    revoked_at: float | None
    limits: Limits = field(default_factory=Limits)
    account_limits: Limits = field(default_factory=Limits)
    org_limits: Limits = field(default_factory=Limits)
    tier: str = "normal"

    def matches(self, secret: str) -> bool:
        """Constant-time comparison, so timing reveals nothing about the stored hash."""
        return hmac.compare_digest(secret_digest(secret), self.secret_sha256)

    def public(self) -> dict[str, object]:
        """Everything a listing may show: never the secret, nor its hash."""
        return {
            "key_id": self.key_id,
            "account_id": self.account_id,
            "org_id": self.org_id,
            "name": self.name,
            "tier": self.tier,
            "limits": self.limits.columns(),
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


@dataclass(frozen=True)
class IssuedKey:
    record: KeyRecord
    api_key: str  # shown once; never stored


@dataclass(frozen=True)
class AccountView:
    """One account as an operator reviews it: its tier and why, its limits, its keys."""

    account_id: str
    org_id: str | None
    tier: str
    tier_reason: str | None
    updated_at: float
    limits: Limits
    org_limits: Limits
    keys: list[KeyRecord]

    def public(self) -> dict[str, object]:
        return {
            "account_id": self.account_id,
            "org_id": self.org_id,
            "tier": self.tier,
            "tier_reason": self.tier_reason,
            "updated_at": self.updated_at,
            "limits": self.limits.columns(),
            "org_limits": self.org_limits.columns(),
            "keys": [k.public() for k in self.keys],
        }


def parse_api_key(api_key: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    prefix, _, rest = api_key.partition("-")
    key_id, _, secret = rest.partition("-")
    if prefix != KEY_PREFIX or not key_id or not secret:
        return None
    return key_id, secret


MAX_ID_LENGTH = 128  # the width of the id and name columns


def check_id(what: str, value: str) -> None:
    """Ids are printable text that fits its column, on SQLite and PostgreSQL alike."""
    if not value.strip():
        raise AccountError(f"the {what} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise AccountError(f"the {what} is longer than {MAX_ID_LENGTH} characters")
    if not value.isprintable():
        raise AccountError(f"the {what} must not contain control characters")


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _limits(row, prefix: str = "") -> Limits:
    return Limits(**{name: row[f"{prefix}{name}"] for name in LIMIT_COLUMNS})


class AccountStore:
    """Keys, accounts and organisations in the store database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def issue_key(
        self,
        account_id: str,
        org_id: str | None = None,
        limits: Limits = Limits(),
        name: str | None = None,
    ) -> IssuedKey:
        """A new key for `account_id` (created on first use, joined to `org_id`)."""
        check_id("account id", account_id)
        if org_id is not None:
            check_id("organisation id", org_id)
        if name is not None:
            check_id("key name", name)
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)  # 256 bits
        now = time.time()
        with self.engine.begin() as conn:
            account = conn.execute(
                select(accounts.c.org_id).where(accounts.c.account_id == account_id)
            ).first()
            if account is None:
                conn.execute(
                    accounts.insert().values(
                        account_id=account_id, org_id=org_id, tier="normal", updated_at=now
                    )
                )
            elif org_id is not None and account.org_id not in (None, org_id):
                raise AccountError(
                    f"account {account_id!r} belongs to organisation {account.org_id!r}, "
                    f"not {org_id!r}"
                )
            elif org_id is not None and account.org_id is None:
                conn.execute(
                    update(accounts)
                    .where(accounts.c.account_id == account_id)
                    .values(org_id=org_id, updated_at=now)
                )
            org_id = org_id if org_id is not None else (account.org_id if account else None)
            if org_id is not None:
                exists = conn.execute(
                    select(organizations.c.org_id).where(organizations.c.org_id == org_id)
                ).first()
                if exists is None:
                    conn.execute(organizations.insert().values(org_id=org_id, updated_at=now))
            conn.execute(
                api_keys.insert().values(
                    key_id=key_id,
                    secret_sha256=secret_digest(secret),
                    account_id=account_id,
                    org_id=org_id,
                    name=name,
                    created_at=now,
                    **limits.columns(),
                )
            )
        record = self.get_key(key_id)  # read back: carries the account's tier and limits
        assert record is not None
        return IssuedKey(record=record, api_key=f"{KEY_PREFIX}-{key_id}-{secret}")

    def revoke_key(self, key_id: str) -> KeyRecord:
        """Revoke a key (idempotent); unknown ids are an error, not a silent no-op."""
        with self.engine.begin() as conn:
            conn.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
        record = self.get_key(key_id)
        if record is None:
            raise UnknownIdError(f"no API key with id {key_id!r}")
        return record

    def get_key(self, key_id: str) -> KeyRecord | None:
        return next(self._key_records(key_id), None)

    def list_keys(self) -> list[KeyRecord]:
        """Every key, revoked ones included, oldest first."""
        return list(self._key_records())

    def active_keys(self) -> dict[str, KeyRecord]:
        """Every usable key with its account's tier and limits: the gateway's cache."""
        return {r.key_id: r for r in self._key_records() if r.revoked_at is None}

    def account_tier(self, account_id: str) -> tuple[str, str | None]:
        """An account's tier and the reason it was set."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(accounts.c.tier, accounts.c.tier_reason).where(
                    accounts.c.account_id == account_id
                )
            ).first()
        if row is None:
            raise UnknownIdError(f"no account {account_id!r} (issue it a key first)")
        return row.tier, row.tier_reason

    def account(self, account_id: str) -> AccountView:
        """An account with its organisation's limits and every key it holds."""
        query = (
            select(
                accounts,
                *(organizations.c[n].label(f"org_{n}") for n in LIMIT_COLUMNS),
            )
            .outerjoin(organizations, organizations.c.org_id == accounts.c.org_id)
            .where(accounts.c.account_id == account_id)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            raise UnknownIdError(f"no account {account_id!r} (issue it a key first)")
        keys = list(self._key_records(account_id=account_id))
        return AccountView(
            account_id=account_id,
            org_id=row["org_id"],
            tier=row["tier"],
            tier_reason=row["tier_reason"],
            updated_at=row["updated_at"],
            limits=_limits(row),
            org_limits=_limits(row, "org_"),
            keys=keys,
        )

    def set_tier(
        self, account_id: str, tier: str, reason: str | None = None, *, actor: str = "operator"
    ) -> None:
        """Set an account's tier, raised or lowered, and record who did and why."""
        if tier not in TIERS:
            raise AccountError(f"unknown tier {tier!r}: choose one of {', '.join(TIERS)}")
        now = time.time()
        with self.engine.begin() as conn:
            old = conn.execute(
                select(accounts.c.tier).where(accounts.c.account_id == account_id)
            ).scalar()
            if old is None:
                raise UnknownIdError(f"no account {account_id!r} (issue it a key first)")
            conn.execute(
                update(accounts)
                .where(accounts.c.account_id == account_id)
                .values(tier=tier, tier_reason=reason, updated_at=now)
            )
            _audit(conn, now, account_id, old, tier, reason, actor)

    def raise_tiers(self, wanted: dict[str, tuple[str, str]], *, actor: str) -> dict[str, str]:
        """Raise accounts to the tiers in `wanted` ({account: (tier, reason)}); never lower
        one (an admin's `block` stays) and skip accounts the store does not know. Each
        raise is one conditional UPDATE, so a tier an admin sets meanwhile is never
        overwritten by a lower one; each is recorded in the audit trail under `actor`.
        Returns {account: new tier} for those changed."""
        changed: dict[str, str] = {}
        now = time.time()
        with self.engine.begin() as conn:
            for account_id, (target, reason) in wanted.items():
                below = list(TIERS[: TIERS.index(target)])
                old = conn.execute(
                    select(accounts.c.tier).where(accounts.c.account_id == account_id)
                ).scalar()
                if old not in below:  # unknown, or already as high
                    continue
                done = conn.execute(
                    update(accounts)
                    .where(accounts.c.account_id == account_id, accounts.c.tier.in_(below))
                    .values(tier=target, tier_reason=reason, updated_at=now)
                )
                if done.rowcount:
                    changed[account_id] = target
                    _audit(conn, now, account_id, old, target, reason, actor)
        return changed

    def tier_history(
        self, account_id: str | None = None, limit: int = 50
    ) -> list[dict[str, object]]:
        """Tier changes (of one account, or all), newest first: when, from what to what,
        why, by whom."""
        query = select(tier_changes).order_by(tier_changes.c.id.desc()).limit(limit)
        if account_id is not None:
            query = query.where(tier_changes.c.account_id == account_id)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def tier_counts(self) -> dict[str, int]:
        """How many accounts hold each tier (every tier named, 0 where none)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(accounts.c.tier, func.count()).group_by(accounts.c.tier)
            ).all()
        held = {str(tier): int(n) for tier, n in rows}
        return {tier: held.get(tier, 0) for tier in TIERS}

    def set_limits(self, level: str, owner_id: str, limits: Limits) -> None:
        """Replace an account's or organisation's limits (None: the configured default)."""
        table = {"account": accounts, "org": organizations}[level]
        id_column = table.c.account_id if level == "account" else table.c.org_id
        with self.engine.begin() as conn:
            done = conn.execute(
                update(table)
                .where(id_column == owner_id)
                .values(updated_at=time.time(), **limits.columns())
            )
        if done.rowcount == 0:
            noun = "account" if level == "account" else "organisation"
            raise UnknownIdError(f"no {noun} {owner_id!r} (issue it a key first)")

    def _key_records(
        self, key_id: str | None = None, account_id: str | None = None
    ) -> Iterator[KeyRecord]:
        query = (
            select(
                api_keys,
                accounts.c.tier,
                *(accounts.c[n].label(f"account_{n}") for n in LIMIT_COLUMNS),
                *(organizations.c[n].label(f"org_{n}") for n in LIMIT_COLUMNS),
            )
            .join(accounts, accounts.c.account_id == api_keys.c.account_id)
            .outerjoin(organizations, organizations.c.org_id == api_keys.c.org_id)
            .order_by(api_keys.c.created_at)
        )
        if key_id is not None:
            query = query.where(api_keys.c.key_id == key_id)
        if account_id is not None:
            query = query.where(api_keys.c.account_id == account_id)
        with self.engine.connect() as conn:
            for row in conn.execute(query).mappings():
                yield KeyRecord(
                    key_id=row["key_id"],
                    secret_sha256=row["secret_sha256"],
                    account_id=row["account_id"],
                    org_id=row["org_id"],
                    name=row["name"],
                    created_at=row["created_at"],
                    revoked_at=row["revoked_at"],
                    limits=_limits(row),
                    account_limits=_limits(row, "account_"),
                    org_limits=_limits(row, "org_"),
                    tier=row["tier"],
                )


def _audit(
    conn: Connection,
    now: float,
    account_id: str,
    old: str,
    new: str,
    reason: str | None,
    actor: str,
) -> None:
    """One row of the tier-change audit trail, in the change's own transaction."""
    conn.execute(
        insert(tier_changes).values(
            ts=now, account_id=account_id, old_tier=old, new_tier=new, reason=reason, actor=actor
        )
    )
