"""The STIX 2.1 mapping: every object parses with stix2 and passes the OASIS validator."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timedelta

import pytest
import stix2
from stix2validator import ValidationOptions, validate_instance, validate_string

from distillguard.exchange import stix, tlp
from distillguard.exchange.privacy import (
    ConsortiumKey,
    ExchangeError,
    KeyRing,
    decode_signature,
    encode_signature,
    keyed_signature,
)

RING = KeyRing(
    [ConsortiumKey("k1", bytes(range(32))), ConsortiumKey("k2", bytes(range(1, 33)))], "k2"
)
EVIDENCE = ["12,345 requests over 3 active days (4,115 a day)", "91% of prompts fill a template"]
# Default (non-strict) options: best-practice deviations are warnings, not errors. Ours,
# all deliberate: 103 deterministic uuid5 ids (identity, extension-definition), 245 our
# own pattern_type values (open vocabulary, so permitted), 401 the plain x_distillguard_*
# custom properties the hub filters on. No schema_dir is given, so extensions (TLP 2.0,
# our verdict) are checked against the bundled schemas only and nothing is downloaded.
OPTIONS = ValidationOptions(version="2.1")
ACCEPTED_WARNINGS = {"103", "245", "401"}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """The validator must never reach out for a schema: any connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access during STIX validation")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module")
def publisher() -> str:
    return stix.identity("Example Provider")["id"]


def assert_valid(obj: dict) -> None:
    parsed = stix2.parse(obj, allow_custom=True)
    assert parsed["id"] == obj["id"]
    result = validate_instance(obj, OPTIONS)
    assert result.is_valid, [str(e) for e in result.errors]
    codes = {str(w).split("{", 1)[1][:3] for w in result.warnings}
    assert codes <= ACCEPTED_WARNINGS, [str(w) for w in result.warnings]


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_identity_is_one_object_per_name():
    acme = stix.identity("Example Provider")
    assert_valid(acme)
    assert acme["identity_class"] == "organization" and acme["name"] == "Example Provider"
    assert stix.identity("Example Provider") == acme  # republishing is idempotent
    assert stix.identity("Other Provider")["id"] != acme["id"]


def test_account_indicator(publisher):
    hashes = [
        RING.hash("email", "alice.smith@gmail.com"),
        RING.hash("phone", "+1 555 010 2030"),
        RING.hash("payment", "pf_0123456789"),
    ]
    ind = stix.account_indicator(
        [*hashes, hashes[0]], score=0.874, evidence=EVIDENCE, created_by=publisher
    )
    assert_valid(ind)
    assert ind["pattern_type"] == "stix" and ind["indicator_types"] == ["malicious-activity"]
    assert ind["pattern"].count("[user-account:user_id = ") == 3  # the duplicate dropped
    assert ind["pattern"].count(" OR ") == 2
    assert all(f"'{h}'" in ind["pattern"] for h in hashes)
    assert ind["confidence"] == 87
    assert _time(ind["valid_until"]) - _time(ind["valid_from"]) == timedelta(days=90)
    assert ind["object_marking_refs"] == [tlp.MARKING_IDS["amber"]]
    assert ind["x_distillguard_kind"] == "account" and ind["created_by_ref"] == publisher
    assert all(e in ind["description"] for e in EVIDENCE)
    # Another member matches it from its own view of the account, written its own way.
    assert set(RING.hashes("email", "Alice.Smith+x@googlemail.com")) & set(hashes)


def test_account_indicator_markings_and_validity_follow_the_arguments(publisher):
    ind = stix.account_indicator(
        [RING.hash("email", "a@example.org")],
        score=1.0,
        evidence=[],
        created_by=publisher,
        tlp="amber+strict",
        valid_days=7,
    )
    assert_valid(ind)
    assert ind["object_marking_refs"] == [tlp.MARKING_IDS["amber+strict"]]
    assert ind["confidence"] == 100 and "[user-account" in ind["pattern"]
    assert _time(ind["valid_until"]) - _time(ind["valid_from"]) == timedelta(days=7)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hashes": ["alice@example.com"]}, "KeyRing hashes"),
        ({"hashes": []}, "KeyRing hashes"),
        ({"evidence": ["shares a card with bob@example.org"]}, "raw email address"),
        ({"evidence": ["paid with 4111 1111 1111 1111"]}, "raw payment card number"),
        ({"score": 1.2}, "score 1.2 is not within"),
        ({"tlp": "white"}, "unknown TLP level 'white'"),
        ({"valid_days": 0}, "a day at least"),
    ],
)
def test_account_indicator_refuses(publisher, change, message):
    args = {
        "hashes": [RING.hash("email", "a@example.org")],
        "score": 0.9,
        "evidence": EVIDENCE,
        "created_by": publisher,
        **change,
    }
    with pytest.raises(ExchangeError, match=message):
        stix.account_indicator(args.pop("hashes"), **args)


def test_template_indicator(publisher):
    row = keyed_signature(RING.current, ["Translate into French, keeping the tone: {}"])[0]
    signature = encode_signature("k2", row)
    ind = stix.template_indicator(signature, score=0.66, created_by=publisher, tlp="green")
    assert_valid(ind)
    assert ind["pattern_type"] == "x-distillguard-minhash"
    assert ind["x_distillguard_kind"] == "template" and ind["confidence"] == 66
    assert ind["object_marking_refs"] == [tlp.MARKING_IDS["green"]]
    key_id, decoded = decode_signature(ind["pattern"])
    assert key_id == "k2" and (decoded == row).all()
    with pytest.raises(ExchangeError, match="not a keyed MinHash signature"):
        stix.template_indicator("Translate into French: {}", score=0.5, created_by=publisher)


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ("203.0.113.7", "[ipv4-addr:value = '203.0.113.7']"),
        ("203.0.113.7/24", "[ipv4-addr:value = '203.0.113.0/24']"),  # the host is not shared
        ("2001:db8::1", "[ipv6-addr:value = '2001:db8::1']"),
        ("2001:DB8::/32", "[ipv6-addr:value = '2001:db8::/32']"),
    ],
)
def test_network_indicator_for_addresses_needs_allow_ip(publisher, value, pattern):
    ind = stix.network_indicator(value, created_by=publisher, tlp="red", allow_ip=True)
    assert_valid(ind)
    assert ind["pattern"] == pattern and ind["x_distillguard_kind"] == "network"
    assert ind["object_marking_refs"] == [tlp.MARKING_IDS["red"]]
    with pytest.raises(ExchangeError, match="without allow_ip"):
        stix.network_indicator(value, created_by=publisher, allow_ip=False)


@pytest.mark.parametrize(
    ("value", "number"), [("AS64500", 64500), ("as4200000000", 4200000000), ("13335", 13335)]
)
def test_network_indicator_for_autonomous_systems_is_always_allowed(publisher, value, number):
    ind = stix.network_indicator(value, created_by=publisher, allow_ip=False)
    assert_valid(ind)
    assert ind["pattern"] == f"[autonomous-system:number = {number}]"


@pytest.mark.parametrize(
    ("value", "message"),
    [("AS4294967296", "out of range"), ("proxy.example.net", "not an IP address, CIDR or AS")],
)
def test_network_indicator_refuses_what_it_cannot_map(publisher, value, message):
    with pytest.raises(ExchangeError, match=message):
        stix.network_indicator(value, created_by=publisher, allow_ip=True)


def test_cluster_campaign(publisher):
    indicators = [
        stix.account_indicator(
            [RING.hash("email", f"u{i}@example.org")], score=0.9, evidence=[], created_by=publisher
        )["id"]
        for i in range(3)
    ]
    campaign, *relationships = stix.cluster_campaign(
        "Distillation cluster c3",
        indicator_ids=indicators,
        accounts=12,
        score=0.95,
        evidence=["9 shared payment fingerprints", "3 signup bursts"],
        created_by=publisher,
        tlp="amber",
    )
    for obj in (campaign, *relationships):
        assert_valid(obj)
        assert obj["object_marking_refs"] == [tlp.MARKING_IDS["amber"]]
    assert campaign["type"] == "campaign" and campaign["confidence"] == 95
    assert "12 accounts" in campaign["description"] and campaign["x_distillguard_accounts"] == 12
    assert [r["source_ref"] for r in relationships] == indicators
    assert {(r["relationship_type"], r["target_ref"]) for r in relationships} == {
        ("indicates", campaign["id"])
    }
    with pytest.raises(ExchangeError, match="raw email address"):
        stix.cluster_campaign(
            "ops@example.org's accounts",
            indicator_ids=[],
            accounts=2,
            score=0.9,
            evidence=[],
            created_by=publisher,
        )


def test_verdict_sighting(publisher):
    objects = stix.verdict_sighting(
        "suspect-7b-instruct",
        p_value=3.2e-9,
        tokens_scored=48_000,
        watermark_key_fingerprint="wk_0123456789abcdef",
        created_by=publisher,
        tlp="green",
    )
    for obj in objects:
        assert_valid(obj)
    by_type = {obj["type"]: obj for obj in objects}
    assert sorted(by_type) == sorted(
        ["identity", "extension-definition", "indicator", "software", "observed-data", "sighting"]
    )
    extension, sighting = by_type["extension-definition"], by_type["sighting"]
    assert extension["extension_types"] == ["property-extension"]
    assert extension["schema"].startswith("https://distillguard.dev/")
    assert extension["version"] and extension["created_by_ref"] == by_type["identity"]["id"]
    assert sighting["extensions"] == {
        extension["id"]: {
            "extension_type": "property-extension",
            "p_value": 3.2e-9,
            "tokens_scored": 48_000,
        }
    }
    watermark = by_type["indicator"]
    assert watermark["pattern_type"] == "x-distillguard-watermark"
    assert watermark["pattern"] == "wk_0123456789abcdef"
    assert watermark["x_distillguard_kind"] == "watermark"
    assert sighting["sighting_of_ref"] == watermark["id"]
    assert sighting["observed_data_refs"] == [by_type["observed-data"]["id"]]
    assert by_type["observed-data"]["object_refs"] == [by_type["software"]["id"]]
    assert by_type["software"]["name"] == "suspect-7b-instruct"
    assert sighting["object_marking_refs"] == [tlp.MARKING_IDS["green"]]
    # One extension (and author) for every verdict, whoever publishes it.
    again = stix.verdict_sighting(
        "other-model",
        p_value=0.5,
        tokens_scored=10,
        watermark_key_fingerprint="wk_fedcba9876543210",
        created_by=stix.identity("Other Provider")["id"],
    )
    assert again[:2] == objects[:2]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"p_value": 1.5}, "p-value 1.5 is not within"),
        ({"p_value": float("nan")}, "is not within"),
        ({"tokens_scored": 0}, "scores tokens"),
        ({"watermark_key_fingerprint": "wk 01"}, "fingerprint"),
        ({"model_name": "model of bob@example.org"}, "raw email address"),
    ],
)
def test_verdict_sighting_refuses(publisher, change, message):
    args = {
        "model_name": "suspect",
        "p_value": 0.01,
        "tokens_scored": 100,
        "watermark_key_fingerprint": "wk_0123456789abcdef",
        "created_by": publisher,
        **change,
    }
    with pytest.raises(ExchangeError, match=message):
        stix.verdict_sighting(args.pop("model_name"), **args)


def test_marking_objects_are_the_tlp_2_definitions():
    markings = stix.marking_objects()
    assert [m["id"] for m in markings] == list(tlp.MARKING_IDS.values())
    for marking in markings:
        assert_valid(marking)


def test_bundle_of_a_publication_validates(publisher):
    objects = [
        stix.identity("Example Provider"),
        stix.account_indicator(
            [RING.hash("email", "a@example.org")],
            score=0.9,
            evidence=EVIDENCE,
            created_by=publisher,
        ),
        *stix.verdict_sighting(
            "suspect",
            p_value=1e-6,
            tokens_scored=900,
            watermark_key_fingerprint="wk_0123456789abcdef",
            created_by=publisher,
        ),
        *stix.marking_objects(),
    ]
    published = stix.bundle(objects)
    assert published["type"] == "bundle" and published["id"].startswith("bundle--")
    assert [o["id"] for o in published["objects"]] == [o["id"] for o in objects]
    assert isinstance(stix2.parse(published, allow_custom=True), stix2.v21.Bundle)
    result = validate_string(json.dumps(published), OPTIONS)
    assert result.is_valid, [str(e) for e in result.errors]

    network = stix.network_indicator("198.51.100.0/24", created_by=publisher, allow_ip=True)
    with pytest.raises(ExchangeError, match="IP address"):
        stix.bundle([*objects, network])
    assert validate_instance(stix.bundle([*objects, network], allow_ip=True), OPTIONS).is_valid
