"""What distillguard publishes, as STIX 2.1: one function per row of the mapping table.

| function           | finding                   | STIX 2.1 objects                             |
|--------------------|---------------------------|----------------------------------------------|
| identity           | the publishing provider   | identity (organization)                      |
| account_indicator  | a flagged account         | indicator: [user-account:user_id = 'k2:…']   |
|                    |                           | OR … (one per keyed identifier hash)         |
| template_indicator | a prompt template         | indicator: keyed MinHash signature,          |
|                    |                           | pattern_type x-distillguard-minhash          |
| network_indicator  | an IP, a CIDR or an ASN   | indicator: ipv4-addr / ipv6-addr value,      |
|                    |                           | autonomous-system number                     |
| cluster_campaign   | a cluster of accounts     | campaign + relationship "indicates"          |
|                    | (one operator, a hydra)   | (indicator -> campaign) per indicator        |
| verdict_sighting   | a model carrying our      | extension-definition (+ its author), our     |
|                    | watermark                 | watermark indicator (x-distillguard-         |
|                    |                           | watermark), software, observed-data and a    |
|                    |                           | sighting, p-value in a property extension    |
| marking_objects    | TLP 2.0                   | the official OASIS marking-definitions       |
| bundle             | a publication             | bundle                                       |

Objects are built with `stix2` (which checks properties and STIX patterns) and returned
as plain JSON dicts for the hub and client. Every object carries the TLP 2.0 marking
of its level (but for the fixed, public identities and extension-definition), and every
function runs `check_shareable` on what it returns: accounts appear only as keyed hashes,
templates only as keyed signatures.
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from stix2 import v21

from distillguard.exchange import tlp as tlp_markings
from distillguard.exchange.privacy import (
    ExchangeError,
    check_shareable,
    decode_signature,
    is_identifier_hash,
)

if TYPE_CHECKING:
    from stix2.base import _STIXBase

# uuid5 namespace of distillguard's deterministic ids (random, fixed forever).
NAMESPACE = uuid.UUID("a0436729-e5c8-48de-99b6-f229677c4e9b")
# Objects with deterministic ids have fixed timestamps too, so that publishing one
# again is the same version of the same object, not a conflicting one.
_FIXED_TIME = "2025-01-01T00:00:00.000Z"
_VERDICT_EXTENSION = {
    "name": "distillguard watermark verdict",
    "description": "The p-value of a watermark detection test and the tokens it scored.",
    "schema": "https://distillguard.dev/stix/extensions/watermark-verdict/v1.json",
    "version": "1.0.0",
}
# The longest indicator pattern a hub takes (exchange/hub/taxii.py refuses longer with a
# 422): far above any we build. An account indicator holds at most
# MAX_ACCOUNT_IDENTIFIERS hashes (128 characters each at most, with a 32-character key id).
MAX_PATTERN = 4096
MAX_ACCOUNT_IDENTIFIERS = 30
_ASN = re.compile(r"(?:AS)?(\d{1,10})", re.IGNORECASE)
_FINGERPRINT = re.compile(r"[A-Za-z0-9_./:-]{1,128}")


def identity(name: str) -> dict:
    """The publisher: one id per name, the same object however often it is published."""
    return _json(
        v21.Identity(
            id=f"identity--{uuid.uuid5(NAMESPACE, f'identity:{name}')}",
            created=_FIXED_TIME,
            modified=_FIXED_TIME,
            name=name,
            identity_class="organization",
        )
    )


def account_indicator(
    hashes: list[str],
    *,
    score: float,
    evidence: list[str],
    created_by: str,
    tlp: str = "amber",
    valid_days: int = 90,
) -> dict:
    """A flagged account, known by the keyed hashes of its identifiers: a member holding
    any of them matches it."""
    if not hashes or not all(is_identifier_hash(h) for h in hashes):
        raise ExchangeError("an account indicator takes KeyRing hashes ('<key id>:<hex>') only")
    if len(set(hashes)) > MAX_ACCOUNT_IDENTIFIERS:
        raise ExchangeError(
            f"an account indicator holds at most {MAX_ACCOUNT_IDENTIFIERS} identifier hashes"
        )
    pattern = " OR ".join(f"[user-account:user_id = '{h}']" for h in dict.fromkeys(hashes))
    return _indicator(
        "account",
        name="Distillation account",
        description=_said("Account flagged for distillation", evidence),
        pattern=pattern,
        pattern_type="stix",
        indicator_types=["malicious-activity"],
        confidence=_confidence(score),
        created_by=created_by,
        tlp=tlp,
        valid_days=valid_days,
    )


def template_indicator(
    signature: str, *, score: float, created_by: str, tlp: str = "amber", valid_days: int = 90
) -> dict:
    """A prompt template, as its keyed MinHash signature (`privacy.encode_signature`)."""
    decode_signature(signature)  # refuse anything else before it is published
    return _indicator(
        "template",
        name="Distillation prompt template",
        description="Keyed MinHash signature of a prompt template used for distillation.",
        pattern=signature,
        pattern_type="x-distillguard-minhash",
        indicator_types=["malicious-activity"],
        confidence=_confidence(score),
        created_by=created_by,
        tlp=tlp,
        valid_days=valid_days,
    )


def network_indicator(
    value: str, *, created_by: str, tlp: str = "amber", allow_ip: bool, valid_days: int = 90
) -> dict:
    """An IPv4/IPv6 address or CIDR (only with `allow_ip`: addresses can be personal
    data) or an autonomous system ("AS64500" or "64500", always shareable)."""
    value = value.strip()
    if asn := _ASN.fullmatch(value):
        number = int(asn.group(1))
        if number >= 2**32:
            raise ExchangeError(f"AS number {number} is out of range")
        pattern = f"[autonomous-system:number = {number}]"
    else:
        try:
            network = ipaddress.ip_network(value, strict=False)  # host bits are dropped
        except ValueError:
            raise ExchangeError("not an IP address, CIDR or AS number") from None
        if not allow_ip:
            raise ExchangeError("refusing to publish an IP address or CIDR without allow_ip")
        # A single address is written without its /32 or /128.
        text = str(network.network_address if "/" not in value else network)
        pattern = f"[ipv{network.version}-addr:value = '{text}']"
    return _indicator(
        "network",
        name="Distillation network",
        description="Network source of distillation traffic.",
        pattern=pattern,
        pattern_type="stix",
        indicator_types=["malicious-activity"],
        created_by=created_by,
        tlp=tlp,
        valid_days=valid_days,
        allow_ip=allow_ip,
    )


def cluster_campaign(
    name: str,
    *,
    indicator_ids: Sequence[str],
    accounts: int,
    score: float,
    evidence: list[str],
    created_by: str,
    tlp: str = "amber",
) -> list[dict]:
    """A cluster of accounts run by one operator, and the indicators that point to it."""
    markings = _marking_refs(tlp)
    campaign = v21.Campaign(
        name=name,
        description=_said(f"Distillation operation over {accounts} accounts", evidence),
        objective="Distil a model from API outputs",
        confidence=_confidence(score),
        created_by_ref=created_by,
        object_marking_refs=markings,
        x_distillguard_kind="cluster",
        x_distillguard_accounts=accounts,
        allow_custom=True,
    )
    relationships = [
        v21.Relationship(
            relationship_type="indicates",
            source_ref=indicator_id,
            target_ref=campaign.id,
            created_by_ref=created_by,
            object_marking_refs=markings,
        )
        for indicator_id in indicator_ids
    ]
    return [_json(obj) for obj in (campaign, *relationships)]


def verdict_sighting(
    model_name: str,
    *,
    p_value: float,
    tokens_scored: int,
    watermark_key_fingerprint: str,
    created_by: str,
    tlp: str = "amber",
) -> list[dict]:
    """Our watermark, detected in a suspect model's outputs: the watermark indicator, the
    model (software) observed, and a sighting of the one in the other. The p-value and
    token count ride in a property extension, defined by the extension-definition (and
    its author, distillguard) returned first."""
    if not 0.0 <= p_value <= 1.0:
        raise ExchangeError(f"p-value {p_value} is not within [0, 1]")
    if tokens_scored < 1:
        raise ExchangeError(f"a verdict scores tokens, not {tokens_scored}")
    if not _FINGERPRINT.fullmatch(watermark_key_fingerprint):
        raise ExchangeError("a watermark key fingerprint is 1-128 of [A-Za-z0-9_./:-]")
    markings = _marking_refs(tlp)
    author, extension = _verdict_extension()
    watermark = _indicator(
        "watermark",
        name="distillguard watermark",
        description="Outputs of a model served behind distillguard, carrying its watermark.",
        pattern=watermark_key_fingerprint,
        pattern_type="x-distillguard-watermark",
        indicator_types=["attribution"],
        created_by=created_by,
        tlp=tlp,
    )
    model = v21.Software(name=model_name, object_marking_refs=markings)
    now = datetime.now(UTC)
    observed = v21.ObservedData(
        first_observed=now,
        last_observed=now,
        number_observed=1,
        object_refs=[model.id],
        created_by_ref=created_by,
        object_marking_refs=markings,
    )
    sighting = v21.Sighting(
        sighting_of_ref=watermark["id"],
        observed_data_refs=[observed.id],
        where_sighted_refs=[created_by],
        count=1,
        created_by_ref=created_by,
        object_marking_refs=markings,
        extensions={
            extension["id"]: {
                "extension_type": "property-extension",
                "p_value": p_value,
                "tokens_scored": tokens_scored,
            }
        },
        allow_custom=True,  # stix2 knows no schema for our extension's properties
    )
    return [author, extension, watermark, *(_json(o) for o in (model, observed, sighting))]


def marking_objects() -> list[dict]:
    """The TLP 2.0 marking-definitions, for a bundle to carry what its objects refer to."""
    markings = [tlp_markings.marking_definition(level) for level in tlp_markings.LEVELS]
    for marking in markings:
        check_shareable(marking)
    return markings


def bundle(objects: Sequence[dict], *, allow_ip: bool = False) -> dict:
    """A STIX bundle of these objects (`allow_ip` if it carries network indicators)."""
    return _json(v21.Bundle(objects=list(objects), allow_custom=True), allow_ip)


def _indicator(
    kind: str,
    *,
    created_by: str,
    tlp: str,
    valid_days: int | None = None,
    allow_ip: bool = False,
    **properties: object,
) -> dict:
    """An indicator valid from now, for `valid_days` if given; `kind` says which of
    ours it is (x_distillguard_kind), for subscribers that filter."""
    pattern = properties.get("pattern")
    if isinstance(pattern, str) and len(pattern) > MAX_PATTERN:
        raise ExchangeError(f"a pattern of {len(pattern)} characters (a hub takes {MAX_PATTERN})")
    now = datetime.now(UTC)
    if valid_days is not None:
        if valid_days < 1:
            raise ExchangeError(f"an indicator must be valid for a day at least, not {valid_days}")
        properties["valid_until"] = now + timedelta(days=valid_days)
    return _json(
        v21.Indicator(
            created=now,
            modified=now,
            valid_from=now,
            created_by_ref=created_by,
            object_marking_refs=_marking_refs(tlp),
            x_distillguard_kind=kind,
            allow_custom=True,
            **properties,
        ),
        allow_ip,
    )


def _verdict_extension() -> tuple[dict, dict]:
    """The extension-definition of the verdict properties and its author: fixed objects,
    so every member's sightings use one extension id."""
    author = identity("distillguard")
    extension = v21.ExtensionDefinition(
        id=f"extension-definition--{uuid.uuid5(NAMESPACE, _VERDICT_EXTENSION['schema'])}",
        created=_FIXED_TIME,
        modified=_FIXED_TIME,
        created_by_ref=author["id"],
        extension_types=["property-extension"],
        **_VERDICT_EXTENSION,
    )
    return author, _json(extension)


def _marking_refs(level: str) -> list[str]:
    if level not in tlp_markings.MARKING_IDS:
        raise ExchangeError(f"unknown TLP level {level!r}: one of {', '.join(tlp_markings.LEVELS)}")
    return [tlp_markings.MARKING_IDS[level]]


def _confidence(score: float) -> int:
    if not 0.0 <= score <= 1.0:
        raise ExchangeError(f"score {score} is not within [0, 1]")
    return round(100 * score)


def _said(summary: str, evidence: Sequence[str]) -> str:
    return f"{summary}: {'; '.join(evidence)}." if evidence else f"{summary}."


def _json(obj: _STIXBase, allow_ip: bool = False) -> dict:
    """A stix2 object as plain JSON, checked for publication."""
    as_dict = json.loads(obj.serialize())
    check_shareable(as_dict, allow_ip)
    return as_dict
