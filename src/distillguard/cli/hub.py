"""`hub`: run the exchange hub (a TAXII 2.1 server) and manage its collections and members."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from distillguard.cli.common import err

if TYPE_CHECKING:
    from distillguard.exchange.hub.store import HubStore

hub_app = typer.Typer(
    help="The exchange hub: a TAXII 2.1 server for sharing signals.", no_args_is_help=True
)
hub_collection_app = typer.Typer(help="Hub collections.", no_args_is_help=True)
hub_app.add_typer(hub_collection_app, name="collection")
hub_member_app = typer.Typer(help="Hub members and their rights.", no_args_is_help=True)
hub_app.add_typer(hub_member_app, name="member")

HubStoreOption = Annotated[
    str | None,
    typer.Option("--store", help="The hub's database URL (default: SQLite in the data dir)."),
]


def _hub_store(url: str | None) -> HubStore:
    import platformdirs

    from distillguard.exchange.hub.schema import metadata
    from distillguard.exchange.hub.store import HubStore
    from distillguard.store import open_engine

    default = f"sqlite:///{platformdirs.user_data_path('distillguard') / 'hub.db'}"
    return HubStore(open_engine(url or default, schema=metadata))


@hub_app.command("serve")
def hub_serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 9400,
    store: HubStoreOption = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url",
            envvar="DISTILLGUARD_HUB_URL",
            help="The hub's public URL (e.g. https://hub.example:9400), advertised by discovery.",
        ),
    ] = None,
) -> None:
    """Serve TAXII 2.1 (discovery at /taxii2/, the API root at /api/)."""
    import uvicorn

    from distillguard.exchange.hub.app import create_app

    hub = _hub_store(store)
    app = create_app(hub, base_url=base_url)  # a malformed URL fails here, in one line
    if remarked := hub.remark_tlp():  # objects stored under older, looser marking rules
        err.print(f"re-read the TLP marking of {remarked:,} stored objects")
    err.print(f"hub listening on http://{host}:{port}/taxii2/")
    # No proxy headers: the hub has no use for a client's claimed address.
    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=False)


@hub_collection_app.command("add")
def hub_collection_add(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="Collection name (its title in TAXII).")
    ],
    description: Annotated[str | None, typer.Option(help="What it holds.")] = None,
    store: HubStoreOption = None,
) -> None:
    """Create a collection; prints its TAXII id."""
    typer.echo(_hub_store(store).add_collection(name, description))


@hub_member_app.command("add")
def hub_member_add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Member name (a provider).")],
    read: Annotated[
        list[str] | None, typer.Option("--read", help="A collection it may read.")
    ] = None,
    write: Annotated[
        list[str] | None, typer.Option("--write", help="A collection it may publish to.")
    ] = None,
    org: Annotated[
        str | None, typer.Option(help="Its organisation (TLP:AMBER+STRICT scope; default NAME).")
    ] = None,
    anonymous: Annotated[
        bool, typer.Option(help="Show its objects as created by the hub (audit keeps it).")
    ] = False,
    expires_days: Annotated[float | None, typer.Option(help="Token lifetime in days.")] = None,
    store: HubStoreOption = None,
) -> None:
    """Register a member; prints its bearer token once (only a hash is kept)."""
    token = _hub_store(store).add_member(
        name,
        org=org,
        read=read or [],
        write=write or [],
        anonymous=anonymous,
        expires_days=expires_days,
    )
    typer.echo(token)


@hub_member_app.command("revoke")
def hub_member_revoke(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Member name.")],
    store: HubStoreOption = None,
) -> None:
    """Revoke a member's token at once (what it published stays, the audit log says when)."""
    _hub_store(store).revoke_member(name)
    err.print(f"member {name}: token revoked")
