"""`keys`, `accounts` and `orgs`: API keys, risk tiers and limits in the store."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from distillguard.cli.common import StoreOption, err, screen, store_url
from distillguard.cli.exchange import KeyringOption, open_watchlist

if TYPE_CHECKING:
    from distillguard.store import AccountStore

keys_app = typer.Typer(help="Gateway API keys: issue, revoke, list.", no_args_is_help=True)
accounts_app = typer.Typer(help="Accounts: risk tiers and limits.", no_args_is_help=True)
orgs_app = typer.Typer(help="Organisations: limits.", no_args_is_help=True)

RpmOption = Annotated[int | None, typer.Option(help="Requests per minute.")]
TpmOption = Annotated[int | None, typer.Option(help="Tokens per minute.")]
TpdOption = Annotated[int | None, typer.Option(help="Tokens per day.")]
ConcurrencyOption = Annotated[int | None, typer.Option(help="Concurrent requests.")]


def _accounts(store: str | None) -> AccountStore:
    from distillguard.store import AccountStore, open_engine

    url = store_url(store)
    return AccountStore(open_engine(url))


@keys_app.command("issue")
def keys_issue(
    account: Annotated[str, typer.Option(help="Account the key belongs to (created if new).")],
    org: Annotated[str | None, typer.Option(help="Organisation of the account.")] = None,
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    tpd: TpdOption = None,
    concurrency: ConcurrencyOption = None,
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
    store: StoreOption = None,
) -> None:
    """Issue an API key; the secret key is printed once on stdout and never stored."""
    from distillguard.policy import Limits

    limits = Limits(rpm=rpm, tpm=tpm, tpd=tpd, concurrency=concurrency)
    issued = _accounts(store).issue_key(account, org, limits, name)
    err.print(f"issued key {issued.record.key_id} for account {account} (shown once)")
    print(issued.api_key)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (the part after `dg-`).")],
    store: StoreOption = None,
) -> None:
    """Revoke a key; gateways stop accepting it within their refresh interval."""
    record = _accounts(store).revoke_key(key_id)
    err.print(f"revoked {record.key_id} (account {record.account_id})")


@keys_app.command("list")
def keys_list(
    store: StoreOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per key.")] = False,
) -> None:
    """List keys (ids, accounts, limits, state); never secrets."""
    records = [r.public() for r in _accounts(store).list_keys()]
    if json_output:
        for record in records:
            print(json.dumps(record))
        return
    table = Table("key id", "account", "org", "tier", "rpm", "tpm", "concurrency", "state")
    for record in records:
        limits = record["limits"]
        table.add_row(
            record["key_id"],
            record["account_id"],
            record["org_id"] or "",
            record["tier"],
            *(
                str(limits[k]) if limits[k] is not None else "default"
                for k in ("rpm", "tpm", "concurrency")
            ),
            "revoked" if record["revoked_at"] else "active",
        )
    Console().print(table)


@accounts_app.command("set-tier")
def accounts_set_tier(
    account: Annotated[str, typer.Argument(help="Account id.")],
    tier: Annotated[str, typer.Argument(help="normal, watch, throttle or block.")],
    reason: Annotated[str | None, typer.Option(help="Why (kept with the account).")] = None,
    store: StoreOption = None,
) -> None:
    """Set an account's risk tier (gateways apply it within their refresh interval)."""
    _accounts(store).set_tier(account, tier, reason)
    err.print(f"account {account}: tier {tier}")


def _limits_setter(level: str, noun: str, members: str) -> Callable[..., None]:
    """`accounts set-limits` and `orgs set-limits`: one command, two levels."""

    def set_limits(
        owner: Annotated[str, typer.Argument(metavar="ID", help="Account or organisation id.")],
        rpm: RpmOption = None,
        tpm: TpmOption = None,
        tpd: TpdOption = None,
        concurrency: ConcurrencyOption = None,
        store: StoreOption = None,
    ) -> None:
        from distillguard.policy import Limits

        limits = Limits(rpm=rpm, tpm=tpm, tpd=tpd, concurrency=concurrency)
        _accounts(store).set_limits(level, owner, limits)
        shown = ", ".join(f"{k} {v or 'default'}" for k, v in limits.columns().items())
        err.print(f"{noun} {owner}: {shown}")

    set_limits.__doc__ = f"Set an {noun}'s limits, shared by all its {members} (unset: default)."
    return set_limits


accounts_app.command("set-limits")(_limits_setter("account", "account", "keys"))
orgs_app.command("set-limits")(_limits_setter("org", "organisation", "accounts"))


@accounts_app.command("identify")
def accounts_identify(
    account: Annotated[str, typer.Argument(help="Account id.")],
    email: Annotated[list[str] | None, typer.Option("--email", help="An email address.")] = None,
    phone: Annotated[list[str] | None, typer.Option("--phone", help="A phone number.")] = None,
    payment: Annotated[
        list[str] | None, typer.Option("--payment", help="A payment fingerprint or card.")
    ] = None,
    keyring: KeyringOption = None,
    store: StoreOption = None,
) -> None:
    """Record an account's identifiers (kept only as consortium-keyed hashes) and match them
    against the watchlist at once: a match raises the account's tier."""
    identifiers = [
        *(("email", v) for v in email or []),
        *(("phone", v) for v in phone or []),
        *(("payment", v) for v in payment or []),
    ]
    watchlist = open_watchlist(store, keyring)
    found = watchlist.identify(account, identifiers)
    err.print(f"account {account}: {len(identifiers)} identifiers recorded (hashed)")
    for match in found:
        screen.print(match.reason())
    tier, _ = watchlist.accounts.account_tier(account)
    err.print(f"account {account}: tier {tier}")
