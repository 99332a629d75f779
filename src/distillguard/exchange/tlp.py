"""Traffic Light Protocol 2.0 markings (the OASIS STIX extension) and who may see what.

The marking definitions are the official OASIS objects (cti-stix-common-objects):
fixed ids, so every STIX tool recognises them. The hub enforces them: TLP:RED never
leaves its publisher; TLP:AMBER+STRICT stays within the publisher's organisation;
TLP:AMBER, GREEN and CLEAR go to every member with read rights on the collection
(the hub's membership *is* the community that AMBER and GREEN allow).
"""

from __future__ import annotations

from collections.abc import Iterable

EXTENSION_ID = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"
MARKING_IDS = {
    "clear": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "green": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "amber": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "amber+strict": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    "red": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}
LEVELS = list(MARKING_IDS)  # least to most restrictive
_LEVEL_OF = {marking: level for level, marking in MARKING_IDS.items()}


def marking_definition(level: str) -> dict:
    """The official marking-definition object of a TLP 2.0 level."""
    return {
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": MARKING_IDS[level],
        "created": "2022-10-01T00:00:00.000Z",
        "name": f"TLP:{level.upper()}",
        "extensions": {EXTENSION_ID: {"extension_type": "property-extension", "tlp_2_0": level}},
    }


def level_of(marking_refs: Iterable[str]) -> str | None:
    """The most restrictive TLP 2.0 level among an object's `object_marking_refs`."""
    levels = [_LEVEL_OF[ref] for ref in marking_refs if ref in _LEVEL_OF]
    return max(levels, key=LEVELS.index) if levels else None


def may_read(level: str | None, *, same_member: bool, same_org: bool) -> bool:
    """Whether a reader may see an object of this level from this publisher."""
    if level == "red":
        return same_member
    if level == "amber+strict":
        return same_org
    return True
