"""Corroboration on the exchange hub, as members see it: `distillguard hub serve` on
loopback, the OASIS taxii2-client to publish and read, stix2 and the OASIS validator on
what comes back. Every test publishes values of its own, so the tests share one hub."""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import stix2
from stix2validator import ValidationOptions, validate_instance
from taxii2client.v21 import Collection

from distillguard.exchange import stix, tlp
from distillguard.exchange.hub import corroboration
from distillguard.exchange.hub.corroboration import (
    combined_confidence,
    corroboration_id,
    pattern_values,
    value_digest,
)
from distillguard.exchange.hub.records import Member, Query
from distillguard.exchange.hub.schema import metadata
from distillguard.exchange.hub.store import HubStore, hub_identity
from distillguard.exchange.hub.taxii import TAXII, read_envelope
from distillguard.exchange.stixfields import taxii_time
from distillguard.store import open_engine
from tests.gateway_stack import hub_member, hub_server
from tests.helpers import run

MEMBERS = {  # name: (organisation, extra flags)
    "acme": ("acme", []),
    "acme-eu": ("acme", []),  # a second token of the same provider
    "globex": ("globex", []),
    "initech": ("initech", []),
    "umbrella": ("umbrella", ["--anonymous"]),
}
# Each publisher signs its objects with its identity: none of these may show in the hub's
# sightings.
IDENTITIES = {org: stix.identity(f"{org.title()} Corp")["id"] for org, _ in MEMBERS.values()}
# Deliberate validator warnings: 103 the hub's deterministic (uuid5) sighting id.
ACCEPTED_WARNINGS = {"103"}


@dataclass
class Hub:
    url: str  # the API root
    store: str
    tokens: dict[str, str]
    collection_id: str

    def collection(self, member: str) -> Collection:
        return Collection(
            f"{self.url}collections/{self.collection_id}/",
            user=member,
            password=self.tokens[member],
        )

    def http(self, member: str) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.url}collections/{self.collection_id}/",
            headers={"Authorization": f"Bearer {self.tokens[member]}", "Accept": TAXII},
        )


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Iterator[Hub]:
    store = f"sqlite:///{tmp_path_factory.mktemp('hub') / 'hub.db'}"
    result = run("hub", "collection", "add", "signals", "--store", store)
    assert result.returncode == 0, result.stderr
    collection_id = result.stdout.strip()
    tokens = {
        name: hub_member(
            store,
            name,
            "--org",
            org,
            "--read",
            "signals",
            *([] if name == "reader" else ["--write", "signals"]),
            *flags,
        )
        for name, (org, flags) in {**MEMBERS, "reader": ("reader", [])}.items()
    }
    with hub_server(store) as url:
        yield Hub(url, store, tokens, collection_id)


def _value() -> str:
    """A keyed identifier hash no other test uses."""
    return f"k1:{os.urandom(32).hex()}"


def _indicator(
    member: str, *values: str, level: str = "green", confidence: int | None = 80
) -> dict:
    extra = {} if confidence is None else {"confidence": confidence}
    made = stix2.v21.Indicator(
        name="Distillation account",
        pattern=" OR ".join(f"[user-account:user_id = '{v}']" for v in values),
        pattern_type="stix",
        valid_from="2026-11-01T00:00:00Z",
        created_by_ref=IDENTITIES[MEMBERS[member][0]],
        object_marking_refs=[tlp.MARKING_IDS[level]],
        **extra,
    )
    return json.loads(made.serialize())


def _publish(hub: Hub, member: str, *objects: dict) -> None:
    status = hub.collection(member).add_objects({"objects": list(objects)})
    assert status.status == "complete" and status.failure_count == 0


def _sighting(hub: Hub, member: str, indicator: dict) -> dict | None:
    """The hub's sighting of an indicator, as this member reads it (None: 404)."""
    response = hub.http(member).get(f"objects/{corroboration_id(indicator['id'])}/")
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    (served,) = response.json()["objects"]
    return served


def _date_added(hub: Hub, obj: dict) -> str:
    manifest = hub.collection("reader").get_manifest(id=obj["id"])
    (entry,) = manifest["objects"]
    return entry["date_added"]


def _assert_valid(obj: dict) -> None:
    """stix2 parses it and the OASIS validator passes it (offline: any connection fails)."""
    assert stix2.parse(obj, allow_custom=False)["id"] == obj["id"]

    def refuse(*args, **kwargs):
        raise AssertionError("network access during STIX validation")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket, "getaddrinfo", refuse)
        result = validate_instance(obj, ValidationOptions(version="2.1"))
    assert result.is_valid, [str(e) for e in result.errors]
    codes = {str(w).split("{", 1)[1][:3] for w in result.warnings}
    assert codes <= ACCEPTED_WARNINGS, [str(w) for w in result.warnings]


def test_two_organisations_corroborate_without_being_named(hub):
    value = _value()
    first = _indicator("acme", value, confidence=80)
    second = _indicator("globex", _value(), value, confidence=70)  # shares one of two
    _publish(hub, "acme", first)
    assert _sighting(hub, "reader", first) is None  # one organisation: nothing yet
    _publish(hub, "globex", second)

    response = hub.http("reader").get(f"objects/{corroboration_id(first['id'])}/")
    assert response.status_code == 200
    (sighting,) = response.json()["objects"]
    _assert_valid(sighting)
    assert sighting["sighting_of_ref"] == first["id"]
    assert sighting["count"] == 2
    assert sighting["confidence"] == 94  # 1 - (1 - 0.8)(1 - 0.7)
    assert sighting["created_by_ref"] == hub_identity()
    assert sighting["object_marking_refs"] == [tlp.MARKING_IDS["green"]]
    assert sighting["first_seen"] == _date_added(hub, first)
    assert sighting["last_seen"] == _date_added(hub, second)
    assert "where_sighted_refs" not in sighting and "observed_data_refs" not in sighting
    served = response.text
    for name in (*MEMBERS, *IDENTITIES, *IDENTITIES.values(), "Acme", "Globex"):
        assert name not in served, name
    # The second indicator is corroborated the same way; a third member reads both.
    other = _sighting(hub, "reader", second)
    assert other is not None and (other["count"], other["confidence"]) == (2, 94)


def test_one_organisation_twice_is_no_corroboration(hub):
    value = _value()
    first, second = _indicator("acme", value), _indicator("acme-eu", value)
    _publish(hub, "acme", first)
    _publish(hub, "acme-eu", second)
    assert _sighting(hub, "reader", first) is None
    assert _sighting(hub, "acme", second) is None
    listed = hub.collection("reader").get_objects(type="sighting", limit=1000)
    assert not {first["id"], second["id"]} & {o["sighting_of_ref"] for o in listed["objects"]}


def test_red_and_amber_strict_reports_do_not_count(hub):
    value = _value()
    shared = _indicator("acme", value, level="green")
    red = _indicator("globex", value, level="red")
    strict = _indicator("initech", value, level="amber+strict")
    _publish(hub, "acme", shared)
    _publish(hub, "globex", red)
    _publish(hub, "initech", strict)
    for member in ("reader", "acme", "globex", "initech"):
        assert _sighting(hub, member, shared) is None, member

    # A report every member may read does count, and the hidden ones still do not.
    _publish(hub, "umbrella", _indicator("umbrella", value, level="amber"))
    sighting = _sighting(hub, "reader", shared)
    assert sighting is not None and sighting["count"] == 2  # acme and umbrella only
    # The RED indicator is corroborated too (by acme and umbrella), for its publisher
    # alone: its sighting carries its marking and its readers.
    assert _sighting(hub, "reader", red) is None
    assert _sighting(hub, "initech", red) is None
    for_globex = _sighting(hub, "globex", red)
    assert for_globex is not None and for_globex["count"] == 2
    assert for_globex["object_marking_refs"] == [tlp.MARKING_IDS["red"]]
    _assert_valid(for_globex)


def test_a_sighting_from_another_organisation_counts(hub):
    indicator = _indicator("acme", _value(), confidence=60)
    _publish(hub, "acme", indicator)
    seen = stix2.v21.Sighting(
        sighting_of_ref=indicator["id"],
        created_by_ref=IDENTITIES["globex"],
        object_marking_refs=[tlp.MARKING_IDS["amber"]],
    )  # no confidence of its own: it takes the indicator's
    _publish(hub, "globex", json.loads(seen.serialize()))
    sighting = _sighting(hub, "reader", indicator)
    assert sighting is not None
    assert (sighting["count"], sighting["confidence"]) == (2, 84)  # 1 - 0.4 * 0.4


def test_a_third_organisation_raises_the_count_in_a_new_version(hub):
    value = _value()
    first = _indicator("acme", value, confidence=50)
    _publish(hub, "acme", first, _indicator("acme-eu", value, confidence=90))
    _publish(hub, "globex", _indicator("globex", value, confidence=50))
    before = _sighting(hub, "reader", first)
    assert before is not None
    assert (before["count"], before["confidence"]) == (2, 95)  # acme at its best: 90

    reader = hub.http("reader")
    last_added = _date_added(hub, before)
    _publish(hub, "initech", _indicator("initech", value, confidence=60))
    after = _sighting(hub, "reader", first)
    assert after is not None
    assert (after["count"], after["confidence"]) == (3, 98)  # 1 - 0.1 * 0.5 * 0.4
    assert after["modified"] > before["modified"] and after["created"] == before["created"]
    assert after["first_seen"] == before["first_seen"] <= after["last_seen"]

    versions = reader.get(f"objects/{after['id']}/versions/").json()["versions"]
    assert versions == [before["modified"], after["modified"]]
    newer = reader.get("objects/", params={"added_after": last_added}).json()["objects"]
    assert after in newer  # a puller that asks for what is new gets it
    _assert_valid(after)


def test_a_revoked_indicator_no_longer_counts(hub):
    value = _value()
    first, second = _indicator("acme", value), _indicator("globex", value)
    _publish(hub, "acme", first)
    _publish(hub, "globex", second)
    assert _sighting(hub, "reader", first)["count"] == 2
    revoked = {**second, "revoked": True, "modified": "2030-01-01T00:00:00.000Z"}
    _publish(hub, "globex", revoked)
    lowered = _sighting(hub, "reader", first)
    assert (lowered["count"], lowered["confidence"]) == (1, 80)
    withdrawn = _sighting(hub, "reader", second)
    assert withdrawn["revoked"] is True and withdrawn["count"] == 2  # what it said, withdrawn
    _assert_valid(withdrawn)


def test_a_later_hidden_version_changes_nothing_others_see(hub):
    value = _value()
    first, second = _indicator("acme", value), _indicator("globex", value)
    _publish(hub, "acme", first)
    _publish(hub, "globex", second)
    before = _sighting(hub, "reader", first)
    hidden = {
        **second,
        "modified": "2030-01-01T00:00:00.000Z",
        "object_marking_refs": [tlp.MARKING_IDS["red"]],
        "revoked": True,  # a withdrawal only globex may read
    }
    _publish(hub, "globex", hidden)
    reader = hub.http("reader")
    assert _sighting(hub, "reader", first) == before
    assert reader.get(f"objects/{before['id']}/versions/").json()["versions"] == [
        before["modified"]
    ]
    # The sighting of the re-marked indicator follows it: its new version is globex's.
    of_second = _sighting(hub, "reader", second)
    assert of_second is not None and "revoked" not in of_second
    mine = _sighting(hub, "globex", second)
    assert mine["revoked"] is True and mine["object_marking_refs"] == [tlp.MARKING_IDS["red"]]


def test_a_rejected_envelope_changes_no_sighting(hub):
    value = _value()
    first = _indicator("acme", value)
    _publish(hub, "acme", first)
    _publish(hub, "globex", _indicator("globex", value))
    before = _sighting(hub, "reader", first)
    initech = hub.http("initech")
    taxii = {"Content-Type": TAXII}

    bad = {**_indicator("initech", _value()), "id": "indicator--not-a-uuid"}
    refused = initech.post(
        "objects/", json={"objects": [_indicator("initech", value), bad]}, headers=taxii
    )
    assert refused.status_code == 422 and "objects[1]" in refused.json()["description"]
    # No member may take (or shadow) the id of a hub sighting: its UUID is version 5.
    squatter = {
        "type": "sighting",
        "spec_version": "2.1",
        "id": corroboration_id(first["id"]),
        "created": "2031-01-01T00:00:00.000Z",
        "modified": "2031-01-01T00:00:00.000Z",
        "sighting_of_ref": first["id"],
        "count": 50,
        "confidence": 100,
    }
    reserved = initech.post(
        "objects/", json={"objects": [_indicator("initech", value), squatter]}, headers=taxii
    )
    assert reserved.status_code == 422 and "objects[1]" in reserved.json()["description"]

    assert _sighting(hub, "reader", first) == before
    versions = hub.http("reader").get(f"objects/{before['id']}/versions/").json()["versions"]
    assert versions == [before["modified"]]


# -- the rules themselves ------------------------------------------------------------------


def test_values_are_what_a_pattern_compares_equal():
    def digests(*pairs: tuple[str, str]) -> set[str]:
        return {value_digest(f"stix:{path}", value) for path, value in pairs}

    assert pattern_values(
        "[user-account:user_id = 'k1:aa'] OR [user-account:user_id = 'k2:bb']", "stix"
    ) == digests(("user-account:user_id", "'k1:aa"), ("user-account:user_id", "'k2:bb"))
    assert pattern_values("[ipv4-addr:value IN ('10.0.0.1', '10.0.0.2')]", "stix") == digests(
        ("ipv4-addr:value", "'10.0.0.1"), ("ipv4-addr:value", "'10.0.0.2")
    )
    asn = pattern_values("[autonomous-system:number = 64500]", "stix")
    assert asn == pattern_values("[autonomous-system:number = 64500.0]", "stix")
    assert asn != pattern_values("[network-traffic:dst_port = 64500]", "stix")  # qualified
    assert asn != pattern_values("[autonomous-system:name = '64500']", "stix")
    # Not compared equal: negations and LIKE operands, whatever they contain.
    assert pattern_values("[ipv4-addr:value != '10.0.0.1']", "stix") == set()
    assert pattern_values("[ipv4-addr:value NOT = '10.0.0.1']", "stix") == set()
    assert pattern_values("[file:name LIKE 'user-account:user_id = \\'k1\\'']", "stix") == set()
    assert pattern_values("[file:hashes.'SHA-256' = 'a\\'b']", "stix") == digests(
        ("file:hashes.'SHA-256'", "'a'b")
    )
    assert pattern_values("k1:AAAA", "x-distillguard-minhash") == {
        value_digest("x-distillguard-minhash", "k1:AAAA")
    }
    assert pattern_values(None, "stix") == set()


def test_confidence_is_a_noisy_or_and_ids_are_fixed():
    assert combined_confidence([80, 70]) == 94
    assert combined_confidence([50]) == 50
    assert combined_confidence([100, 0]) == 100
    assert combined_confidence([]) == 0
    indicator = f"indicator--{uuid.uuid4()}"
    expected = uuid.uuid5(stix.NAMESPACE, f"corroboration:{indicator}")
    assert corroboration_id(indicator) == f"sighting--{expected}"
    assert corroboration.is_reserved(corroboration_id(indicator))
    assert not corroboration.is_reserved(f"sighting--{uuid.uuid4()}")
    assert not corroboration.is_reserved(f"ipv4-addr--{expected}")  # SCOs are uuid5 by rule


# -- both databases ------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> Iterator[HubStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hub.db'}"
    else:
        url = request.getfixturevalue("postgres_server")
    engine = open_engine(url, schema=metadata)
    if request.param == "postgresql":  # one server per session, shared: start from empty
        metadata.drop_all(engine)
        metadata.create_all(engine)
    yield HubStore(engine)
    if request.param == "postgresql":
        metadata.drop_all(engine)
    engine.dispose()


def test_the_store_corroborates_on_both_databases(store):
    collection_id = store.add_collection("signals")
    other_id = store.add_collection("other")
    for name in ("acme", "globex", "initech"):
        store.add_member(name, read=["signals", "other"], write=["signals", "other"])
    acme, globex, initech = (Member(n, n, False) for n in ("acme", "globex", "initech"))
    value = _value()
    first = _indicator("acme", value, confidence=80)

    def post(member: Member, *objects: dict, collection: str = collection_id) -> dict:
        body = json.dumps({"objects": list(objects)}).encode()
        return store.add_objects(member, collection, read_envelope(body, taxii_time(0)))

    post(acme, first)
    post(globex, _indicator("globex", value, confidence=70))
    post(initech, _indicator("initech", value), collection=other_id)  # counts in "other" only
    status = post(initech, _indicator("initech", value, confidence=None))  # 50
    assert status["success_count"] == 1

    sighting_id = corroboration_id(first["id"])
    page = store.page(initech, collection_id, Query(ids=[sighting_id], versions=["all"]))
    bodies = [json.loads(obj.body) for _, _, obj in page.rows]
    assert [(b["count"], b["confidence"]) for b in bodies] == [(2, 94), (3, 97)]
    assert bodies[0]["created"] == bodies[1]["created"] < bodies[1]["modified"]
    log = store.audit_log()
    assert [row["detail"]["corroborations"] for row in log if row["action"] == "publish"] == [
        3,  # initech: a new version of the two sightings, and one of its own indicator
        0,  # initech in another collection
        2,  # globex: both indicators corroborated
        0,
    ]
