"""Reading pulled STIX: what the watchlist keeps of other members' indicators and of the
hub's corroboration of them. Pure (the watchlist stores what this reads).

Every field is checked to fit its column: one member's malformed object must not fail
the page it came in, and so every later pull; it is reported by id and skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from distillguard.exchange.hub.corroboration import corroboration_id
from distillguard.exchange.privacy import ExchangeError, decode_signature, is_identifier_hash
from distillguard.exchange.stixfields import id_pattern, parse_time

UNKNOWN_CONFIDENCE = 0.5  # STIX: an indicator without `confidence` says nothing either way
MAX_VALUE = 512  # the watchlist's value column
_STIX_ID = id_pattern("[a-z][a-z0-9-]{0,60}")
_IDENTITY = id_pattern("identity")
_USER_ID = re.compile(r"user-account:user_id\s*=\s*'([^']*)'")
_NETWORK = re.compile(
    r"(?:ipv4-addr|ipv6-addr):value\s*=\s*'([^']*)'|autonomous-system:number\s*=\s*(\d+)"
)


@dataclass
class Reading:
    """A page of pulled objects, read: the newest version in it of each indicator and of
    each corroboration (by its indicator's id)."""

    indicators: dict[str, Indicator] = field(default_factory=dict)
    corroborations: dict[str, Corroboration] = field(default_factory=dict)
    ignored: int = 0  # not ours to act on: campaigns, relationships, others' sightings, …
    problems: list[str] = field(default_factory=list)


def read(objects: Iterable[dict], now: float) -> Reading:
    """The indicators and the hub's corroborations among `objects` (only a sighting with
    the id the hub gives its own counts as corroboration); `now` caps future times."""
    done = Reading()
    for obj in objects:
        if not isinstance(obj, dict):
            done.problems.append("an object that is not a JSON object")
            continue
        try:
            if obj.get("type") == "indicator":
                found = Indicator.of(obj, now)
                held = done.indicators.get(found.id)
                if held is None or held.modified < found.modified:
                    done.indicators[found.id] = found
            elif obj.get("type") == "sighting" and obj.get("id") == corroboration_id(
                str(obj.get("sighting_of_ref"))
            ):
                seen = Corroboration.of(obj, now)
                word = done.corroborations.get(seen.indicator_id)
                if word is None or word.modified < seen.modified:
                    done.corroborations[seen.indicator_id] = seen
            else:
                done.ignored += 1
        except (KeyError, TypeError, ValueError) as exc:
            done.problems.append(f"{_named(obj)}: unreadable ({exc})")
    return done


@dataclass(frozen=True)
class Indicator:
    """What the watchlist keeps of a STIX indicator; `of` raises on a malformed one."""

    id: str
    modified: float  # the version, as Unix seconds
    reported_at: float  # decay counts from here: the version's time, if it is not ahead
    revoked: bool
    kind: str | None
    values: list[str]
    confidence: float
    valid_until: float | None
    publisher: str | None

    @classmethod
    def of(cls, obj: dict, now: float) -> Indicator:
        """ValueError (never a failure of the page) for a field that does not fit."""
        kind, values = _values(obj)
        if any(len(v) > MAX_VALUE for v in values):
            raise ValueError(f"a pattern value longer than {MAX_VALUE} characters")
        publisher = obj.get("created_by_ref")
        if publisher is not None and not (
            isinstance(publisher, str) and _IDENTITY.fullmatch(publisher)
        ):
            raise ValueError("`created_by_ref` is not an identity id")
        valid_until = obj.get("valid_until")
        return cls(
            id=_stix_id(obj.get("id"), "indicator"),
            modified=_instant(obj.get("modified")),
            # A version dated in the future would never decay: it counts from now at most.
            reported_at=min(_instant(obj.get("modified")), now),
            revoked=obj.get("revoked") is True,
            kind=kind,
            values=values,
            confidence=_confidence(obj.get("confidence"), UNKNOWN_CONFIDENCE),
            valid_until=_instant(valid_until) if valid_until else None,
            publisher=publisher,
        )


@dataclass(frozen=True)
class Corroboration:
    """The hub's word on an indicator: how many members reported it, how surely in all."""

    indicator_id: str
    members: int
    confidence: float
    modified: float
    last_seen: float

    @classmethod
    def of(cls, obj: dict, now: float) -> Corroboration:
        """A revoked one (its indicator was) is kept as no corroboration, so that an older
        version read later cannot bring it back."""
        modified = _instant(obj.get("modified"))
        withdrawn = obj.get("revoked") is True
        count = obj.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 999_999_999:
            raise ValueError("`count` is not a sighting count")
        last_seen = obj.get("last_seen")
        return cls(
            indicator_id=_stix_id(obj.get("sighting_of_ref"), "indicator"),
            members=0 if withdrawn else count,
            confidence=0.0 if withdrawn else _confidence(obj.get("confidence"), 0.0),
            modified=modified,
            last_seen=min(_instant(last_seen) if last_seen else modified, now),
        )


def _named(obj: object) -> str:
    """An object's id for a message, if it has a plausible one (never other content)."""
    given = obj.get("id") if isinstance(obj, dict) else None
    return given if isinstance(given, str) and _STIX_ID.fullmatch(given) else "an object"


def _confidence(value: object, missing: float) -> float:
    """A STIX confidence (an integer 0-100) as [0, 1]; ValueError for anything else."""
    if value is None:
        return missing
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise ValueError("`confidence` is not an integer from 0 to 100")
    return value / 100


def _stix_id(value: object, kind: str) -> str:
    if not (isinstance(value, str) and _STIX_ID.fullmatch(value) and value.startswith(kind)):
        raise ValueError(f"not a STIX {kind} id")
    return value


def _values(obj: dict) -> tuple[str | None, list[str]]:
    """(our kind, the values to match on) of an indicator; kind None: not one we act on."""
    pattern, pattern_type = obj.get("pattern", ""), obj.get("pattern_type")
    if pattern_type == "x-distillguard-minhash":
        try:
            decode_signature(pattern)
        except ExchangeError:
            return "template", []
        return "template", [pattern]
    if pattern_type != "stix":
        return None, []
    if "user-account:user_id" in pattern:
        return "account", [v for v in _USER_ID.findall(pattern) if is_identifier_hash(v)]
    network = [a or n for a, n in _NETWORK.findall(pattern)]
    return ("network", network) if network else (None, [])


def _instant(timestamp: object) -> float:
    """Unix seconds of a STIX timestamp (`2026-11-22T10:00:00.000Z`); ValueError if not one."""
    if not isinstance(timestamp, str) or not timestamp.endswith("Z"):
        raise ValueError("a timestamp that is not a STIX timestamp")
    try:
        return parse_time(timestamp).timestamp()
    except ValueError:  # its own message would echo the text
        raise ValueError("a timestamp that is not a STIX timestamp") from None
