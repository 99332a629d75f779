"""Corroboration: an indicator reported by several member organisations is worth more.

A *report* of indicator I, in I's collection, by organisation O is either an indicator
published by a member of O that shares at least one value with I (I itself is its
publisher's report), or a sighting published by a member of O whose `sighting_of_ref`
is I. Of each object, what counts is its latest version that every member of the
collection may read (TLP:CLEAR, GREEN, AMBER or unmarked), unless that one is revoked: a
RED or AMBER+STRICT version never shows, not even as a count.

When two organisations or more report I, the hub publishes (and keeps up to date) its own
sighting of I: `count` is the number of organisations, `confidence` their noisy-OR

    confidence = round(100 × (1 − Π_O (1 − c_O / 100)))

where c_O is the highest confidence among O's reports (a sighting without one takes I's;
50 when I has none either). It names no member: no where_sighted_refs, no
observed_data_refs, created by the hub's identity. Its id is `corroboration_id(I)`, a
version-5 UUID; the hub refuses any member's sighting with such an id (`is_reserved`),
so a client may trust a sighting as the hub's exactly when its id is
`corroboration_id(its sighting_of_ref)`.

This module is the pure part (what an object says, the values of a pattern, the formula,
the sighting's JSON); `reports.py` keeps the index tables and writes the sightings.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import re2

from distillguard.exchange import tlp
from distillguard.exchange.stix import NAMESPACE

# TLP levels whose reports count (None: unmarked, which every member reads too).
COUNTED_TLP = ("clear", "green", "amber")
DEFAULT_CONFIDENCE = 50
TYPES = frozenset({"indicator", "sighting"})
# What one pattern may cost (its length is bounded by the hub, stix.MAX_PATTERN): the
# values counted of it, and the comparisons and literals read to find them. Ours hold at
# most stix.MAX_ACCOUNT_IDENTIFIERS values; the rest of a longer one is not counted.
MAX_VALUES = 64
MAX_SCANNED = 128

# A STIX pattern's comparisons, scanned left to right, in RE2: linear in the pattern's
# length whatever it holds (Python's backtracking engine took time quadratic in it: an
# 80k-character pattern held the hub for 8 s). A quoted literal that is not the value of
# an equality (a LIKE or MATCHES operand, a `!=`) is consumed whole by the second
# alternative, so nothing inside it is ever read as a comparison.
_STRING = r"'[^'\\]*(?:\\.[^'\\]*)*'"  # (unrolled: one step per run of characters)
_LITERAL = rf"[hbt]?{_STRING}"
_KEY = rf"(?:[A-Za-z0-9_-]+|{_STRING})"
_PATH = rf"[a-z0-9][a-z0-9-]*:{_KEY}(?:\.{_KEY}|\[(?:\d+|\*)\])*"
_SCALAR = rf"(?:{_LITERAL}|[-+]?\d+(?:\.\d+)?|true|false)"
# `IN` must follow whitespace (RE2 has no look-behind: `\s+IN`, where `=` takes `\s*`).
_SCAN = re2.compile(
    rf"(?P<path>{_PATH})(?:\s+(?P<negated>NOT))?"
    rf"(?:\s*=\s*(?P<one>{_SCALAR})|\s+IN\s*\(\s*(?P<set>{_SCALAR}(?:\s*,\s*{_SCALAR})*)\s*\))"
    rf"|{_LITERAL}"
)
_SCALARS = re2.compile(_SCALAR)
_ESCAPE = re.compile(r"\\(.)")


# An organisation's reports of an indicator: (confidence, first added, last added), the
# times in µs since the epoch.
Report = tuple[int, int, int]


class Facts(NamedTuple):
    """What counting reports needs of a posted indicator or sighting."""

    values: tuple[str, ...]  # an indicator's value digests (value_digest)
    confidence: int | None
    revoked: bool
    sighting_of: str | None  # a sighting's sighting_of_ref


def facts_of(obj: dict) -> Facts | None:
    """The facts of an indicator or a sighting (None for any other type)."""
    kind = obj.get("type")
    if kind not in TYPES:
        return None
    confidence = obj.get("confidence")
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, int)
        or not 0 <= confidence <= 100
    ):
        confidence = None
    revoked = obj.get("revoked") is True
    if kind == "indicator":
        found = pattern_values(obj.get("pattern"), obj.get("pattern_type"))
        return Facts(tuple(sorted(found)), confidence, revoked, None)
    ref = obj.get("sighting_of_ref")
    return Facts((), confidence, revoked, ref if isinstance(ref, str) else None)


def pattern_values(pattern: object, pattern_type: object) -> set[str]:
    """The digests of an indicator's values: for a STIX pattern, each value an object path
    is compared equal to (`=` or `IN`, not negated), qualified by that path so that AS
    number 443 and port 443 differ (the first MAX_VALUES of them, within MAX_SCANNED
    comparisons and literals); for any other pattern type, the pattern itself."""
    if not isinstance(pattern, str) or not isinstance(pattern_type, str):
        return set()
    if pattern_type != "stix":
        return {value_digest(pattern_type, pattern)}
    found: set[str] = set()
    for scanned, match in enumerate(_SCAN.finditer(pattern)):
        if scanned == MAX_SCANNED:
            break
        path, negated, one, among = match.groups()  # (one call: RE2's are not free)
        if path is None or negated:
            continue
        scalars = [one] if one else (m.group() for m in _SCALARS.finditer(among))
        for scalar in scalars:
            found.add(value_digest(f"stix:{path}", _canonical(scalar)))
            if len(found) == MAX_VALUES:
                return found
    return found


def value_digest(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}\0{value}".encode()).hexdigest()[:32]  # 128 bits


def _canonical(scalar: str) -> str:
    """One spelling per value: strings unescaped (keeping an h/b/t prefix and the quote,
    so '64500' differs from 64500), numbers as Python writes them (64500.0 is 64500)."""
    if scalar.endswith("'"):
        prefix, _, body = scalar[:-1].partition("'")
        return prefix + "'" + (_ESCAPE.sub(r"\1", body) if "\\" in body else body)
    if scalar in ("true", "false"):
        return scalar
    number = float(scalar)
    return str(int(number)) if number.is_integer() else repr(number)


def corroboration_id(indicator_id: str) -> str:
    """The id of the hub's sighting of an indicator (the same on every hub)."""
    return f"sighting--{uuid.uuid5(NAMESPACE, f'corroboration:{indicator_id}')}"


def is_reserved(object_id: str) -> bool:
    """Whether a member's object would take an id of the kind the hub's sightings have:
    a sighting with a version-5 (name-based) UUID. STIX recommends version 4 for a
    sighting's id; the hub refuses version 5 from members, so no member can take (or
    shadow, with a later version) the id of a corroboration sighting."""
    kind, _, rest = object_id.partition("--")
    return kind == "sighting" and rest[14:15] == "5"


def combined_confidence(confidences: Iterable[int]) -> int:
    """Noisy-OR: the chance that not every organisation is wrong, as 0-100."""
    all_wrong = 1.0
    for confidence in confidences:
        all_wrong *= 1 - confidence / 100
    return round(100 * (1 - all_wrong))


def credit(orgs: dict[str, Report], org: str, report: Report) -> None:
    """Add a report to its organisation's: one organisation counts once, at its highest
    confidence, from its first report to its last."""
    seen = orgs.get(org)
    if seen is None:
        orgs[org] = report
    else:
        orgs[org] = (max(seen[0], report[0]), min(seen[1], report[1]), max(seen[2], report[2]))


def counted(orgs: Mapping[str, Report]) -> dict:
    """What the hub's sighting says of an indicator these organisations report."""
    return {
        "count": len(orgs),
        "confidence": combined_confidence(c for c, _, _ in orgs.values()),
        "first_us": min((f for _, f, _ in orgs.values()), default=None),
        "last_us": max((last for _, _, last in orgs.values()), default=None),
        "revoked": False,
    }


def sighting(
    indicator_id: str,
    *,
    identity: str,
    created: str,
    modified: str,
    count: int,
    confidence: int,
    first_seen: str | None,
    last_seen: str | None,
    tlp_level: str | None,
    revoked: bool = False,
) -> dict:
    """The hub's sighting of an indicator (timestamps as TAXII timestamps)."""
    body = {
        "type": "sighting",
        "spec_version": "2.1",
        "id": corroboration_id(indicator_id),
        "created": created,
        "modified": modified,
        "created_by_ref": identity,
        "sighting_of_ref": indicator_id,
        "count": count,
        "confidence": confidence,
    }
    if first_seen is not None and last_seen is not None:  # (no report left: count 0)
        body.update(first_seen=first_seen, last_seen=last_seen)
    if revoked:
        body["revoked"] = True
    if tlp_level is not None:
        body["object_marking_refs"] = [tlp.MARKING_IDS[tlp_level]]
    return body
