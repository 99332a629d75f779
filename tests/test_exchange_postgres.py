"""The hub and a member's watchlist on PostgreSQL (the production choice for both), on a
private server: publish through the hub, TLP on read, corroboration, pull, match."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import stix2

from distillguard.config import ExchangeSettings
from distillguard.exchange import stix, tlp
from distillguard.exchange.client import HubClient
from distillguard.exchange.privacy import KeyRing
from distillguard.exchange.watchlist import Watchlist
from distillguard.store import AccountStore, open_engine
from tests import servers
from tests.gateway_stack import hub_member, hub_server
from tests.helpers import run


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    try:
        with servers.postgres_server("exchange") as url:
            yield url
    except servers.MissingBinary as exc:
        pytest.fail(str(exc), pytrace=False)


def test_hub_and_watchlist_on_postgresql(database):
    assert run("hub", "collection", "add", "signals", "--store", database).returncode == 0
    rights = ["--read", "signals", "--write", "signals"]
    tokens = {m: hub_member(database, m, *rights) for m in ("acme", "globex", "beta")}
    ring = KeyRing.generate("c1")
    email = ring.hash("email", "operator@example.org")
    with hub_server(database) as hub:
        published = {}
        for member in ("acme", "globex"):
            author = stix.identity(member)
            shared = stix.account_indicator(
                [email], score=0.7, evidence=[], created_by=author["id"], tlp="amber"
            )
            secret = stix.account_indicator(
                [ring.hash("email", f"{member}-only@example.org")],
                score=0.9,
                evidence=[],
                created_by=author["id"],
                tlp="red",
            )
            posted = HubClient(hub, "signals", tokens[member]).publish([author, shared, secret])
            assert len(posted.accepted) == 3 and not posted.failures and posted.error is None
            published[member] = (shared, secret)

        beta = HubClient(hub, "signals", tokens["beta"])
        served = [o for page in beta.pages(None) for o in page]
        ids = {o["id"] for o in served}
        assert all(shared["id"] in ids for shared, _ in published.values())
        assert not any(secret["id"] in ids for _, secret in published.values())  # TLP:RED
        for obj in served:
            stix2.parse(json.dumps(obj), allow_custom=True)
        corroborations = [o for o in served if o["type"] == "sighting"]
        assert corroborations and max(o["count"] for o in corroborations) == 2

        engine = open_engine(database)  # the gateway's tables beside the hub's
        AccountStore(engine).issue_key("beta-1")
        watchlist = Watchlist(engine, ring, ExchangeSettings())
        watchlist.identify("beta-1", [("email", "Operator@Example.org")])
        pulled = watchlist.pull(HubClient(hub, "signals", tokens["beta"]))
        assert pulled.ingested.indicators == 2 and pulled.ingested.corroborations >= 1
        assert pulled.raised == {"beta-1": "throttle"}
        (best, *_) = watchlist.matches()
        assert best.members == 2 and best.confidence == pytest.approx(1 - 0.3 * 0.3, abs=0.02)
        again = watchlist.pull(HubClient(hub, "signals", tokens["beta"]))
        assert again.ingested.indicators == again.ingested.corroborations == 0  # nothing twice
    assert tlp.MARKING_IDS["red"] not in json.dumps(served)
