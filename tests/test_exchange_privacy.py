"""Identifiers as keyed hashes, templates as keyed MinHash, and the pre-publish check."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import stat
import uuid

import numpy as np
import pytest

from distillguard.errors import DistillguardError
from distillguard.exchange import stix
from distillguard.exchange.privacy import (
    ConsortiumKey,
    ExchangeError,
    KeyRing,
    check_shareable,
    decode_signature,
    encode_signature,
    identifier_hash,
    keyed_signature,
    normalise_email,
    normalise_payment,
    normalise_phone,
)
from distillguard.tracing import minhash

K1 = ConsortiumKey("k1", bytes(range(32)))
K2 = ConsortiumKey("k2", bytes(range(32, 64)))
TEMPLATE = "Solve step by step and show all your reasoning. Problem {}: {}"


def test_identifier_hash_is_the_hmac_of_kind_and_normalised_value():
    expected = hmac.new(K1.secret, b"email:alice@example.com", hashlib.sha256).hexdigest()
    assert identifier_hash(K1, "email", " Alice@Example.COM ") == f"k1:{expected}"
    assert identifier_hash(K1, "email", "alice@example.com") == f"k1:{expected}"


def test_hashes_are_separated_by_kind_and_by_key():
    assert identifier_hash(K1, "phone", "+15550102030") != identifier_hash(
        K1, "payment", "+15550102030"
    )
    h1, h2 = identifier_hash(K1, "email", "a@b.org"), identifier_hash(K2, "email", "a@b.org")
    assert h1.split(":")[1] != h2.split(":")[1]


def test_rotation_keeps_old_indicators_matching():
    published = KeyRing([K1], "k1").hash("email", "alice@example.com")
    ring = KeyRing([K1, K2], "k2")
    assert ring.hash("email", "alice@example.com").startswith("k2:")
    matching = ring.hashes("email", "ALICE@example.com")
    assert matching[0] == ring.hash("email", "alice@example.com")  # current key first
    assert published in matching and len(matching) == 2
    assert ring.key("k1") == K1

    fresh = KeyRing.generate("k1")
    rotated = fresh.rotated("k2")
    assert rotated.current.key_id == "k2" and len(rotated.current.secret) == 32
    assert fresh.hash("phone", "+1 555 010 2030") in rotated.hashes("phone", "+15550102030")
    with pytest.raises(ExchangeError, match="already holds"):
        rotated.rotated("k1")
    with pytest.raises(ExchangeError, match="no consortium key 'k9'"):
        rotated.key("k9")


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("  Alice.Smith+distil@GMail.com ", "alicesmith@gmail.com"),
        ("a.l.i.c.e.smith@googlemail.com", "alicesmith@gmail.com"),
        ("Bob.Jones+tag@Example.org", "bob.jones@example.org"),  # dots kept outside Gmail
        ("bob.jones@example.org", "bob.jones@example.org"),
    ],
)
def test_email_normalisation(raw, normalised):
    assert normalise_email(raw) == normalised
    assert identifier_hash(K1, "email", raw) == identifier_hash(K1, "email", normalised)


@pytest.mark.parametrize("raw", ["no-at-sign", "a@b@c.org", "@example.org", "+tag@example.org"])
def test_malformed_emails_are_refused(raw):
    with pytest.raises(ExchangeError, match="not an email address"):
        normalise_email(raw)


def test_phone_and_payment_normalisation():
    assert normalise_phone("+1 (555) 010-2030") == "+15550102030"
    assert normalise_phone("030 / 123 4567") == "0301234567"
    with pytest.raises(ExchangeError, match="fewer than 7 digits"):
        normalise_phone("+1 555 01")
    assert normalise_payment(" PF_AbC-12 34 ") == "pf_abc1234"
    assert normalise_payment("4111-1111 1111-1111") == "4111111111111111"
    with pytest.raises(ExchangeError, match="unknown identifier kind 'ip'"):
        identifier_hash(K1, "ip", "10.0.0.1")


def test_keys_reject_bad_ids_and_short_secrets():
    with pytest.raises(ExchangeError, match="at least 16 are needed"):
        ConsortiumKey("k1", b"short")
    for bad in ["", "has space", "x" * 33, "k1:2"]:
        with pytest.raises(ExchangeError, match="is not 1-32"):
            ConsortiumKey(bad, bytes(32))
    assert repr(K1) == "ConsortiumKey(key_id='k1')"  # the secret never reaches a log
    assert issubclass(ExchangeError, DistillguardError)


# Key files ----------------------------------------------------------------------------------


def _write(path, doc) -> None:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")


def test_key_ring_file_round_trip_is_private(tmp_path):
    path = tmp_path / "consortium.json"
    leftover = tmp_path / "consortium.json.partial"  # from a save that crashed
    for stale in (path, leftover):
        _write(stale, "stale")
        stale.chmod(0o644)
    ring = KeyRing.generate("k1").rotated("k2")
    ring.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = KeyRing.load(path)
    assert loaded.current == ring.current and loaded.keys == ring.keys
    assert json.loads(path.read_text())["current"] == "k2"
    assert list(tmp_path.iterdir()) == [path]  # no partial file left behind


def _b64(secret: bytes) -> str:
    return base64.b64encode(secret).decode()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (None, "does not exist"),
        ("{not json", "is not valid JSON"),
        (["k1"], "must hold"),
        ({"current": "k1", "keys": {"k1": 5}}, "must hold"),
        ({"current": "k3", "keys": {"k1": _b64(bytes(32))}}, "'k3' is not in the key ring"),
        ({"current": "k1", "keys": {"k1": _b64(bytes(8))}}, "the secret has 8 bytes"),
        ({"current": "k 1", "keys": {"k 1": _b64(bytes(32))}}, "is not 1-32"),
        ({"current": "k1", "keys": {"k1": "not base64!"}}, "the secret of 'k1' is not base64"),
    ],
)
def test_key_ring_file_errors_are_clear(tmp_path, doc, message):
    path = tmp_path / "consortium.json"
    if doc is not None:
        _write(path, doc)
    with pytest.raises(ExchangeError, match=message):
        KeyRing.load(path)


# Keyed MinHash --------------------------------------------------------------------------------


def _near_duplicates() -> list[str]:
    return [
        TEMPLATE.format(
            17, "A train leaves at 9 and travels 120 km at 80 km/h. When does it arrive?"
        ),
        TEMPLATE.format(
            342, "A train leaves at 10 and travels 150 km at 60 km/h. When does it arrive?"
        ),
    ]


def test_keyed_signatures_match_near_duplicates_under_one_key():
    a, b = keyed_signature(K1, _near_duplicates())
    assert a.dtype == np.uint32 and a.shape == (minhash.NUM_BINS,)
    assert minhash.similarity(a, b) >= 0.7


def test_keyed_signatures_under_another_key_are_unrelated():
    texts = _near_duplicates()
    under_k1, under_k2 = keyed_signature(K1, texts)[0], keyed_signature(K2, texts)[0]
    assert minhash.similarity(under_k1, under_k2) < 0.1
    # Nor can an outsider compute them with the public, unkeyed MinHash.
    assert minhash.similarity(under_k1, minhash.signatures(texts)[0]) < 0.1


def test_seed_zero_is_todays_minhash():
    texts = _near_duplicates()
    assert np.array_equal(minhash.signatures(texts, seed=0), minhash.signatures(texts))
    assert not np.array_equal(minhash.signatures(texts, seed=1), minhash.signatures(texts))


def test_signature_encoding_round_trips():
    row = keyed_signature(K2, _near_duplicates())[0]
    text = encode_signature("k2", row)
    assert text.startswith("k2:") and "=" not in text
    key_id, decoded = decode_signature(text)
    assert key_id == "k2" and decoded.dtype == np.uint32
    assert np.array_equal(decoded, row)
    body = text.split(":", 1)[1]
    assert base64.urlsafe_b64decode(body + "=") == row.astype("<u4").tobytes()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no separator", "expected '<key id>:<base64url>'"),
        ("k2:abc+def/", "expected '<key id>:<base64url>'"),  # standard, not url-safe, base64
        ("bad id:" + "A" * 171, "expected '<key id>:<base64url>'"),
        ("k2:" + "A" * 170, "170 characters, expected 171"),
        ("k2:" + "A" * 172, "172 characters, expected 171"),
    ],
)
def test_malformed_signatures_are_refused(text, message):
    with pytest.raises(ExchangeError, match=message):
        decode_signature(text)


def test_only_whole_uint32_signatures_encode():
    row = keyed_signature(K1, ["some prompt"])[0]
    with pytest.raises(ExchangeError, match="uint32"):
        encode_signature("k1", row[:16])
    with pytest.raises(ExchangeError, match="uint32"):
        encode_signature("k1", row.astype(np.int64))
    with pytest.raises(ExchangeError, match="is not 1-32"):
        encode_signature("k:1", row)


# The pre-publish check ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "path", "kind"),
    [
        ({"description": "reach them at alice@example.com."}, "$.description", "email address"),
        (
            {"pattern": "[email-addr:value = 'x.y@mail.example.co.uk']"},
            "$.pattern",
            "email address",
        ),
        (
            {"objects": [{}, {"x_notes": ["ok", "+44 20 7946 0958"]}]},
            "$.objects[1].x_notes[1]",
            "phone",
        ),
        ({"description": "call (555) 010-2030 after six"}, "$.description", "phone number"),
        ({"description": "SMS to 555-010-2030"}, "$.description", "phone number"),
        ({"description": "mobile 07700 900123"}, "$.description", "phone number"),
        ({"description": "fixed line 030 1234567"}, "$.description", "phone number"),
        ({"description": "+15550102030"}, "$.description", "phone number"),
        ({"description": "card 4111 1111 1111 1111 used"}, "$.description", "payment card"),
        ({"x": {"y": "4111-1111-1111-1111"}}, "$.x.y", "payment card number"),
        ({"x": "378282246310005"}, "$.x", "payment card number"),  # Amex, 15 digits
        ({"pattern": "[ipv4-addr:value = '203.0.113.7']"}, "$.pattern", "IP address"),
        ({"description": "from 198.51.100.0/24."}, "$.description", "IP address"),
        ({"description": "via 2001:db8::1 and others"}, "$.description", "IP address"),
        ({"description": "range 2001:db8:abcd::/48"}, "$.description", "IP address"),
        ({"extensions": {"alice@example.com": {}}}, "a key of $.extensions", "email address"),
        (
            {"extensions": {"extension-definition--x": {"note": "bob@example.org"}}},
            '$.extensions["extension-definition--x"].note',
            "email address",
        ),
    ],
)
def test_raw_identifiers_are_refused_with_their_path(obj, path, kind):
    with pytest.raises(ExchangeError, match=kind) as refused:
        check_shareable(obj)
    message = str(refused.value)
    assert f" at {path} " in message
    assert "alice" not in message and "7946" not in message and "4111" not in message


def test_ips_pass_only_with_allow_ip_and_nothing_else_does():
    obj = {"pattern": "[ipv4-addr:value = '203.0.113.0/24']", "x": ["2001:db8::/32"]}
    with pytest.raises(ExchangeError, match="allow_ip"):
        check_shareable(obj)
    check_shareable(obj, allow_ip=True)
    with pytest.raises(ExchangeError, match="email address"):
        check_shareable({**obj, "description": "ops@example.com"}, allow_ip=True)


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-01T00:00:00.000Z",
        "2026-11-22T14:23:53.606873Z",
        "0.123456789",
        "1234567.891",
        "p = 1.2e-12",
        "12,345 requests over 30 active days (412 a day)",
        "member of cluster c3 (12 accounts)",
        "[autonomous-system:number = 4200000000]",
        "active 2024-2025, 1 234 567 tokens scored",
        "05.03.2024 and 01-02-2024",
        "stix2 3.0.2 at 12:34:56",
        "x-distillguard-minhash",
        "Unix time 1700000000",
        "4111 1111 1111 1112",  # 16 digits, not Luhn-valid: not a card
        "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d",
    ],
)
def test_legitimate_stix_content_passes(text):
    check_shareable({"description": text, "list": [text], "nested": {"v": text}})


def test_ids_digests_and_signatures_pass_however_their_digits_fall():
    """Random uuids, HMAC digests and signatures hold long digit runs, dashes and
    underscores: thousands of them, not one mistaken for an identifier."""
    rng = random.Random(0)
    ring = KeyRing([K1, K2], "k2")
    texts = [f"indicator--{uuid.UUID(int=rng.getrandbits(128), version=4)}" for _ in range(2000)]
    texts += [ring.hash("email", f"user{i}@example.org") for i in range(2000)]
    texts += [rng.randbytes(32).hex() for _ in range(2000)]
    rows = keyed_signature(K2, [f"prompt {i}: {rng.randbytes(40).hex()}" for i in range(1000)])
    texts += [encode_signature("k2", row) for row in rows]
    texts += [base64.urlsafe_b64encode(rng.randbytes(128)).decode() for _ in range(2000)]
    for text in texts:
        check_shareable({"id": text, "pattern": f"[user-account:user_id = '{text}']"})


def test_objects_made_by_the_stix_mapping_pass():
    ring = KeyRing([K1, K2], "k2")
    me = stix.identity("Example Provider")["id"]
    account = stix.account_indicator(
        [ring.hash("email", "alice@example.com"), ring.hash("payment", "pf_0123456789")],
        score=0.93,
        evidence=["12,345 requests over 3 active days (4,115 a day)"],
        created_by=me,
    )
    template = stix.template_indicator(
        encode_signature("k2", keyed_signature(ring.current, [TEMPLATE])[0]),
        score=0.8,
        created_by=me,
    )
    network = stix.network_indicator("198.51.100.0/24", created_by=me, allow_ip=True)
    verdict = stix.verdict_sighting(
        "suspect-7b",
        p_value=3.2e-9,
        tokens_scored=1_234_567,
        watermark_key_fingerprint="wk_0123456789abcdef",
        created_by=me,
    )
    objects = [account, template, *verdict, *stix.marking_objects()]
    for obj in objects:
        check_shareable(obj)
    check_shareable(stix.bundle([*objects, network], allow_ip=True), allow_ip=True)
    with pytest.raises(ExchangeError, match="IP address"):
        check_shareable(network)
