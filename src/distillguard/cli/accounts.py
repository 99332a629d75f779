"""`keys`, `accounts` and `orgs`: API keys, risk tiers and limits in the store."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Column, Table

from distillguard.cli.common import StoreOption, err, screen, store_url
from distillguard.cli.exchange import KeyringOption, open_watchlist
from distillguard.config import load_settings
from distillguard.policy import MAX_LIMIT

if TYPE_CHECKING:
    from distillguard.config import GatewaySettings
    from distillguard.store import AccountStore
    from distillguard.store.accounts import AccountView

keys_app = typer.Typer(help="Gateway API keys: issue, revoke, list.", no_args_is_help=True)
accounts_app = typer.Typer(help="Accounts: risk tiers and limits.", no_args_is_help=True)
orgs_app = typer.Typer(help="Organisations: limits.", no_args_is_help=True)

LIMITS = tuple(MAX_LIMIT)  # rpm, tpm, tpd, concurrency

RpmOption = Annotated[int | None, typer.Option(help="Requests per minute.")]
TpmOption = Annotated[int | None, typer.Option(help="Tokens per minute.")]
TpdOption = Annotated[int | None, typer.Option(help="Tokens per day.")]
ConcurrencyOption = Annotated[int | None, typer.Option(help="Concurrent requests.")]


def _key_id_column() -> Column:
    """A key id is what `keys revoke` needs: never cut, however narrow the terminal."""
    return Column("key id", no_wrap=True, min_width=16)


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
    key_id: Annotated[
        str, typer.Argument(metavar="KEY_ID", help="The key id (the part after `dg-`).")
    ],
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
    table = Table(_key_id_column(), "account", "org", "tier", "rpm", "tpm", "concurrency", "state")
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


def _when(ts: float | None) -> str:
    return "" if ts is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def _in_effect(view: AccountView, settings: GatewaySettings) -> dict[str, dict[str, object]]:
    """What the gateway applies now, per scope (own limits over the defaults, times the
    tier's multiplier), as `quota.plan` computes them."""
    if view.tier == "block":
        return {}
    factor = getattr(settings.tiers, view.tier, 1.0)
    scopes = {"account": view.limits.over(settings.limits.account).scaled(factor)}
    if view.org_id is not None:
        scopes["org"] = view.org_limits.over(settings.limits.org).scaled(factor)
    for key in view.keys:
        if key.revoked_at is None:
            scopes[f"key {key.key_id}"] = key.limits.over(settings.limits.key).scaled(factor)
    return {scope: limits.columns() for scope, limits in scopes.items()}


@accounts_app.command("show")
def accounts_show(
    account: Annotated[str, typer.Argument(metavar="ACCOUNT", help="Account id.")],
    store: StoreOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Why an account has its tier: tier and reason, limits in effect, keys, and its
    latest tracing score with the evidence."""
    from distillguard.store import ScoreStore

    accounts = _accounts(store)
    view = accounts.account(account)
    settings = load_settings().gateway
    latest = ScoreStore(accounts.engine).latest_score(account)
    document = {
        **view.public(),
        "in_effect": _in_effect(view, settings),
        "latest_score": latest,
    }
    if json_output:
        print(json.dumps(document))
        return
    tier = f"[bold]{view.tier}[/bold]"
    if view.tier == "throttle":
        tier += f" (limits ×{settings.tiers.throttle})"
    screen.print(f"account {view.account_id}" + (f"  org {view.org_id}" if view.org_id else ""))
    screen.print(f"tier     {tier} (account last changed {_when(view.updated_at)})")
    screen.print(f"reason   {view.tier_reason or '(none given)'}")
    if view.tier == "block":
        screen.print("limits   every request refused (403)")
    else:
        table = Table("limits in effect", *LIMITS)
        for scope, limits in document["in_effect"].items():
            table.add_row(scope, *(_limit(limits[n]) for n in LIMITS))
        screen.print(table)
    keys = Table(_key_id_column(), "name", "created", "state")
    for key in view.keys:
        state = f"revoked {_when(key.revoked_at)}" if key.revoked_at else "active"
        keys.add_row(key.key_id, key.name or "", _when(key.created_at), state)
    screen.print(keys if view.keys else "keys     none")
    if latest is None:
        screen.print("score    no tracing run has scored this account")
        return
    verdict = "flagged" if latest["flagged"] else "not flagged"
    cluster = f", cluster {latest['cluster_id']}" if latest["cluster_id"] else ""
    screen.print(
        f"score    {latest['score']:.4f} ({verdict}{cluster}), trace run {latest['run_id']} "
        f"of {_when(latest['finished_at'])} on {latest['source']}"
    )
    for line in latest["evidence"]:
        screen.print(f"  - {line}", markup=False, highlight=False)


def _limit(value: int | None) -> str:
    return "unlimited" if value is None else f"{value:,}"


@accounts_app.command("set-tier")
def accounts_set_tier(
    account: Annotated[str, typer.Argument(metavar="ACCOUNT", help="Account id.")],
    tier: Annotated[str, typer.Argument(metavar="TIER", help="normal, watch, throttle or block.")],
    reason: Annotated[str | None, typer.Option(help="Why (kept with the account).")] = None,
    store: StoreOption = None,
) -> None:
    """Set an account's risk tier (gateways apply it within their refresh interval)."""
    _accounts(store).set_tier(account, tier, reason, actor="cli")
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
    account: Annotated[str, typer.Argument(metavar="ACCOUNT", help="Account id.")],
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
