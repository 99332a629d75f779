"""STIX ids and timestamps, written and read the same way by the hub and the watchlist.

An id is `<type>--<UUID>`; a timestamp is RFC 3339 in UTC (`2026-11-22T10:00:00.000Z`).
The hub counts time in µs since the epoch and writes its timestamps to the microsecond.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def id_pattern(kind: str, *, any_case: bool = False) -> re.Pattern[str]:
    """The ids of `kind` (a type name, or a regular expression for several): with the
    lowercase UUIDs STIX writes, or with `any_case` UUIDs in any case (what the hub
    accepts from clients). Match it whole (`fullmatch`)."""
    digit = "[0-9a-fA-F]" if any_case else "[0-9a-f]"
    uuid = "-".join(f"{digit}{{{n}}}" for n in (8, 4, 4, 4, 12))
    return re.compile(f"(?:{kind})--{uuid}")


def stix_time(moment: datetime) -> str:
    """A moment as a STIX timestamp (in UTC, to the microsecond)."""
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


def taxii_time(us: int) -> str:
    """µs since the epoch as a TAXII timestamp (microsecond precision, UTC)."""
    return stix_time(datetime.fromtimestamp(us / 1e6, UTC))


def now_us() -> int:
    return time.time_ns() // 1000


def parse_time(text: str) -> datetime:
    """An ISO 8601 timestamp (ending in `Z` or an offset) as a datetime; ValueError if it
    is not one. Whoever must refuse anything but RFC 3339 in UTC checks the shape first."""
    return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)


def us_of(moment: datetime) -> int:
    """An aware moment as µs since the epoch (exact: no float on the way)."""
    return (moment - _EPOCH) // _MICROSECOND
