"""What TAXII 2.1 asks of a request and an object, checked before anything is stored.

A posted envelope is accepted whole or not at all: the first object that fails is
reported with its index and nothing of the envelope is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgspec

from distillguard.exchange import tlp
from distillguard.exchange.hub.anonymity import DROPPED, anonymised
from distillguard.exchange.hub.corroboration import facts_of, is_reserved
from distillguard.exchange.hub.records import Query, StoredObject
from distillguard.exchange.stix import MAX_PATTERN
from distillguard.exchange.stixfields import id_pattern, parse_time, taxii_time, us_of

TAXII = "application/taxii+json;version=2.1"
STIX = "application/stix+json;version=2.1"
MAX_LIMIT = 1000
_TYPE_NAME = r"[a-z0-9][a-z0-9-]{1,248}[a-z0-9]"
_TYPE = re.compile(_TYPE_NAME)
_ID = id_pattern(f"({_TYPE_NAME})", any_case=True)  # (matched whole, as _TYPE)
_CURSOR = re.compile(r"([0-9]{1,19})-([0-9]{1,19})")
_MAX_INT64 = 2**63 - 1  # what the database holds
_DIGITS = re.compile(r"[0-9]{1,9}")
# Objects without created/modified (cyber-observables) are versioned by the time they were
# added; STIX timestamps are RFC 3339 in UTC with optional fractions of a second (hours
# end at 23: RFC 3339 has no 24:00, which Python reads as the next midnight from 3.13).
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z"
)


@dataclass
class TaxiiError(Exception):
    """A TAXII error message resource, with its HTTP status."""

    status: int
    title: str
    description: str = ""

    def body(self) -> bytes:
        return msgspec.json.encode(
            {"title": self.title, "description": self.description, "http_status": str(self.status)}
        )


class _Envelope(msgspec.Struct):
    objects: list[dict]


def accepts_taxii(accept: str | None) -> bool:
    """A client that says what it accepts must accept TAXII 2.1 (or anything)."""
    if not accept:
        return True
    for part in accept.split(","):
        media = part.split(";q=")[0].replace(" ", "").lower()
        if media in ("*/*", "application/*", "application/taxii+json", TAXII):
            return True
    return False


def is_taxii(content_type: str | None) -> bool:
    return (content_type or "").replace(" ", "").lower() in (TAXII, "application/taxii+json")


def timestamp_us(value: str, what: str) -> int:
    """A STIX/TAXII timestamp as µs since the epoch."""
    bad = TaxiiError(400, f"bad {what}", f"{value[:100]!r} is not an RFC 3339 UTC timestamp")
    if not _TIMESTAMP.fullmatch(value):
        raise bad
    try:  # the shape is right; the date may still not exist (2026-02-30, 10:60:00)
        return us_of(parse_time(value))
    except ValueError:
        raise bad from None


def normal_version(value: str, what: str) -> str:
    """A timestamp in the one form the hub stores and compares (µs precision)."""
    return taxii_time(timestamp_us(value, what))


def parse_query(params, *, object_id: str | None = None) -> Query:
    """The filters of a GET on objects, manifest or versions."""
    query = Query()
    if (value := params.get("added_after")) is not None:
        query.added_after_us = timestamp_us(value, "added_after")
    if (value := params.get("limit")) is not None:
        if not _DIGITS.fullmatch(value) or not 1 <= int(value) <= MAX_LIMIT:
            raise TaxiiError(400, "bad limit", f"limit must be an integer from 1 to {MAX_LIMIT}")
        query.limit = int(value)
    if (value := params.get("next")) is not None:
        match = _CURSOR.fullmatch(value)
        if not match or max(int(match[1]), int(match[2])) > _MAX_INT64:
            raise TaxiiError(400, "bad next", "next must be a value a previous page returned")
        query.after = (int(match[1]), int(match[2]))
    query.ids = [object_id] if object_id else _list(params, "match[id]")
    query.types = _list(params, "match[type]")
    query.spec_versions = _list(params, "match[spec_version]")
    versions = _list(params, "match[version]")
    if versions:
        query.versions = [
            v if v in ("last", "first", "all") else normal_version(v, "match[version]")
            for v in versions
        ]
    return query


def _list(params, name: str) -> list[str]:
    return [v for value in params.getlist(name) for v in value.split(",") if v]


def read_envelope(body: bytes, added: str, author: str | None = None) -> list[StoredObject]:
    """What the hub stores of each posted object; TaxiiError(422) on the first object that
    is not STIX 2.1. With `author` (an anonymous publisher, shown as the hub), its
    identities are refused in the status and every identity it refers to is `author`
    (exchange/hub/anonymity.py)."""
    try:
        envelope = msgspec.json.decode(body, type=_Envelope)
    except msgspec.DecodeError as exc:
        raise TaxiiError(422, "not a TAXII envelope", str(exc)) from None
    if not envelope.objects:
        raise TaxiiError(422, "empty envelope", "the envelope has no objects")
    named = frozenset(
        o["id"]
        for o in envelope.objects
        if o.get("type") == "identity" and isinstance(o.get("id"), str)
    )
    return [_object(obj, i, added, author, named) for i, obj in enumerate(envelope.objects)]


def _object(
    obj: dict, index: int, added: str, author: str | None, named: frozenset[str] = frozenset()
) -> StoredObject:
    def refuse(reason: str) -> TaxiiError:
        return TaxiiError(422, "invalid STIX object", f"objects[{index}]: {reason}")

    kind, object_id = obj.get("type"), obj.get("id")
    if not isinstance(kind, str) or not _TYPE.fullmatch(kind):
        raise refuse("`type` must be a STIX type name")
    if (
        not isinstance(object_id, str)
        or not (match := _ID.fullmatch(object_id))
        or match[1] != kind
    ):
        raise refuse(f"`id` must be '{kind}--<uuid>'")
    pattern = obj.get("pattern")
    if kind == "indicator" and pattern is not None:
        if not isinstance(pattern, str):
            raise refuse("`pattern` must be a string")
        if len(pattern) > MAX_PATTERN:
            raise refuse(
                f"`pattern` is {len(pattern)} characters; this hub takes at most {MAX_PATTERN}"
            )
    if is_reserved(object_id):
        raise refuse("a sighting's id may not be a version-5 UUID: those are the hub's own")
    spec = obj.get("spec_version", "2.1")
    if spec != "2.1":
        raise refuse("`spec_version` must be '2.1'")
    version = added
    for name in ("created", "modified"):
        value = obj.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise refuse(f"`{name}` must be a timestamp")
        try:
            version = normal_version(value, name)
        except TaxiiError as exc:
            raise refuse(exc.description) from None
    try:
        level = tlp.object_level(obj)
    except tlp.UnknownMarking as exc:
        raise refuse(str(exc)) from None
    creator = obj.get("created_by_ref")
    if creator is not None and not (
        isinstance(creator, str) and (found := _ID.fullmatch(creator)) and found[1] == "identity"
    ):
        raise refuse("`created_by_ref` must be an identity id")
    refusal = None
    if author is not None:
        obj = anonymised(obj, author, named)
        refusal = DROPPED if kind == "identity" else None
    return StoredObject(
        object_id=object_id,
        type=kind,
        version=version,
        spec_version=spec,
        tlp=level,
        body=msgspec.json.encode(obj).decode(),
        facts=facts_of(obj) if refusal is None else None,
        refusal=refusal,
    )
