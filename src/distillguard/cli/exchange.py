"""`exchange`: share signals with other members through a hub (publish, pull), the
consortium key ring, and one-off private set intersections (`exchange psi`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from distillguard.cli.common import (
    EventsFile,
    StoreOption,
    check_writable,
    err,
    store_url,
    write_json,
)
from distillguard.config import load_settings
from distillguard.errors import DistillguardError

if TYPE_CHECKING:
    from distillguard.config import ExchangeSettings
    from distillguard.exchange.privacy import KeyRing
    from distillguard.exchange.watchlist import Watchlist

exchange_app = typer.Typer(
    help="Share signals with other providers through a hub, and act on theirs.",
    no_args_is_help=True,
)

KeyringOption = Annotated[
    Path | None,
    typer.Option("--keyring", help="The consortium key file (default: exchange.keyring)."),
]


def _exchange_settings(keyring: Path | None = None, **overrides: object) -> ExchangeSettings:
    """The exchange settings, with the command line's choices over the configured ones."""
    settings = load_settings().exchange
    chosen = {k: v for k, v in {"keyring": keyring, **overrides}.items() if v is not None}
    return settings.model_copy(update=chosen)


def _keyring(path: Path | None, required: bool = True) -> KeyRing | None:
    from distillguard.exchange.privacy import ExchangeError, KeyRing

    if path is None:
        if required:
            raise ExchangeError("no consortium key ring: set exchange.keyring or pass --keyring")
        return None
    return KeyRing.load(path)


def open_watchlist(store: str | None, keyring: Path | None, required: bool = True) -> Watchlist:
    from distillguard.exchange.watchlist import Watchlist
    from distillguard.store import open_engine

    settings = _exchange_settings(keyring)
    return Watchlist(open_engine(store_url(store)), _keyring(settings.keyring, required), settings)


@exchange_app.command("keygen")
def exchange_keygen(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="Where to write the new key file.")],
    key_id: Annotated[str, typer.Option(help="The key's id, published with every hash.")] = "k1",
    rotate: Annotated[
        bool, typer.Option(help="Add a new current key to the ring at PATH (old keys still match).")
    ] = False,
) -> None:
    """Create a consortium key ring (one member does, and shares it with the others out of
    band), or rotate it."""
    from distillguard.exchange.privacy import KeyRing

    if rotate:
        ring = KeyRing.load(path).rotated(key_id)
    elif path.exists():
        raise DistillguardError(f"{path} exists: pass --rotate to add a key to it")
    else:
        check_writable(path)
        ring = KeyRing.generate(key_id)
    ring.save(path)
    err.print(f"{path}: current key {ring.current.key_id}, {len(ring.keys)} held (mode 0600)")


@exchange_app.command("publish")
def exchange_publish(
    run: Annotated[int | None, typer.Option(help="The trace run (default: the latest).")] = None,
    events: EventsFile = None,
    accounts: Annotated[
        Path | None,
        typer.Option("--accounts", help="Accounts JSONL: identifiers beyond those on record."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the bundle here instead of posting it.")
    ] = None,
    keyring: KeyringOption = None,
    hub: Annotated[str | None, typer.Option(help="The hub's API root URL.")] = None,
    collection: Annotated[str | None, typer.Option(help="The collection's id or title.")] = None,
    store: StoreOption = None,
) -> None:
    """Publish a trace run's flagged accounts, their templates and clusters to the hub
    (only what was not published before)."""
    from distillguard.exchange import stix
    from distillguard.exchange.client import HubClient
    from distillguard.exchange.publish import publish_run
    from distillguard.store import open_engine

    settings = _exchange_settings(keyring, hub=hub, collection=collection)
    ring = _keyring(settings.keyring)
    check_writable(out)
    client = HubClient.from_settings(settings) if out is None else None  # fail before work
    done = publish_run(
        open_engine(store_url(store)),
        ring,
        settings,
        client,
        note=err.print,
        run=run,
        events=events,
        accounts=accounts,
    )
    counts = ", ".join(f"{n} {what}" for what, n in done.publication.counts.items())
    if out is not None:
        write_json(out, stix.bundle(done.publication.objects, allow_ip=settings.allow_ip))
        err.print(f"run {done.run_id}: {counts}; bundle written to {out} (nothing posted)")
    elif done.posted is None:
        err.print(f"run {done.run_id}: nothing new to publish")
    else:
        taken = len(done.posted.accepted)
        err.print(f"run {done.run_id}: published {counts} ({taken} objects) to {client.url}")


@exchange_app.command("pull")
def exchange_pull(
    keyring: KeyringOption = None,
    hub: Annotated[str | None, typer.Option(help="The hub's API root URL.")] = None,
    collection: Annotated[str | None, typer.Option(help="The collection's id or title.")] = None,
    store: StoreOption = None,
) -> None:
    """Import other members' new indicators into the watchlist, then raise the tiers of our
    accounts that match them."""
    from distillguard.exchange.client import HubClient

    settings = _exchange_settings(keyring, hub=hub, collection=collection)
    client = HubClient.from_settings(settings)
    watchlist = open_watchlist(store, settings.keyring, required=False)
    pulled = watchlist.pull(client)
    got = pulled.ingested
    for problem in got.problems:
        err.print(f"skipped {problem}")
    err.print(
        f"{pulled.objects} objects: {got.indicators} indicators stored, {got.revoked} revoked, "
        f"{got.corroborations} corroborations, {got.ignored} other"
    )
    accounts = {m.account_id for m in pulled.matches}
    err.print(
        f"{len(accounts)} of our accounts match shared indicators; "
        f"tiers raised for {len(pulled.raised)}"
    )
    for account, tier in sorted(pulled.raised.items()):
        print(f"{account}\t{tier}")  # tab-separated: for scripts


psi_app = typer.Typer(
    help="One-off private set intersection with another member: the overlap's size only.",
    no_args_is_help=True,
)
exchange_app.add_typer(psi_app, name="psi")
FlaggedOption = Annotated[
    bool, typer.Option("--flagged", help="Only the accounts the latest trace run flagged.")
]


def _psi_hashes(store: str | None, keyring: Path | None, flagged: bool) -> list[str]:
    """Our identifier hashes under the current consortium key."""
    from distillguard.store import ScoreStore

    watchlist = open_watchlist(store, keyring)
    accounts = None
    if flagged:
        scores = ScoreStore(watchlist.engine)
        run_id = scores.latest_run()
        if run_id is None:
            raise DistillguardError("no trace run in the store: run `distillguard trace run`")
        accounts = [row["account_id"] for row in scores.flagged(run_id)[0]]
    return watchlist.hashes(watchlist.keyring.current.key_id, accounts)


@psi_app.command("request")
def psi_request(
    out: Annotated[Path, typer.Option("--out", help="The request file to send.")],
    flagged: FlaggedOption = False,
    keyring: KeyringOption = None,
    store: StoreOption = None,
) -> None:
    """Step 1 (member B): a request over our hashes; the secret key stays in OUT.key."""
    from distillguard.exchange import psi

    check_writable(out)
    secret, document = psi.request(_psi_hashes(store, keyring, flagged))
    key_path = out.with_name(out.name + ".key")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    write_json(out, document)
    err.print(f"{out}: request over {document['items']} hashes; keep {key_path} (secret)")


@psi_app.command("respond")
def psi_respond(
    request_file: Annotated[
        Path, typer.Argument(metavar="REQUEST_FILE", help="The request another member sent.")
    ],
    out: Annotated[Path, typer.Option("--out", help="The response file to send back.")],
    flagged: FlaggedOption = False,
    keyring: KeyringOption = None,
    store: StoreOption = None,
) -> None:
    """Step 2 (member A): answer a request over our hashes."""
    from distillguard.exchange import psi

    check_writable(out)
    document = psi.respond(psi.read(request_file), _psi_hashes(store, keyring, flagged))
    write_json(out, document)
    err.print(f"{out}: response written")


@psi_app.command("overlap")
def psi_overlap(
    response_file: Annotated[
        Path, typer.Argument(metavar="RESPONSE_FILE", help="The response to our request.")
    ],
    key: Annotated[Path, typer.Option("--key", help="The request's secret key (OUT.key).")],
) -> None:
    """Step 3 (member B): print how many identifier hashes both members hold."""
    from distillguard.exchange import psi

    try:
        secret = key.read_bytes()
    except OSError as exc:
        raise DistillguardError(f"cannot read {key}: {exc.strerror}") from None
    print(psi.overlap(psi.read(response_file), secret))
