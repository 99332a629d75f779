"""Traffic Light Protocol markings (the OASIS STIX extension) and who may see what.

The marking definitions are the official OASIS objects (cti-stix-common-objects):
fixed ids, so every STIX tool recognises them. The hub enforces them: TLP:RED never
leaves its publisher; TLP:AMBER+STRICT stays within the publisher's organisation;
TLP:AMBER, GREEN and CLEAR go to every member with read rights on the collection
(the hub's membership *is* the community that AMBER and GREEN allow).

Reading markings fails closed: the TLP 1.0 ids of the STIX 2.1 specification (what
`stix2.TLP_RED` and most STIX tools still send) mean their TLP 2.0 level (WHITE is
CLEAR), ids are compared case-insensitively, a granular marking marks the whole object
(the hub serves objects whole, so the most restrictive part decides), and a
marking-definition the hub does not know is refused (`UnknownMarking`): the hub cannot
enforce a restriction it cannot read, and serving it as unmarked would leak it.
"""

from __future__ import annotations

from collections.abc import Iterable

from distillguard.exchange.stixfields import id_pattern

EXTENSION_ID = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"
MARKING_IDS = {
    "clear": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "green": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "amber": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "amber+strict": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    "red": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}
# The STIX 2.1 specification's own TLP (1.0) marking definitions (section 7.2.1.4).
TLP1_IDS = {
    "clear": "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9",  # TLP:WHITE
    "green": "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da",
    "amber": "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82",
    "red": "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed",
}
LEVELS = list(MARKING_IDS)  # least to most restrictive
_LEVEL_OF = {marking: level for ids in (MARKING_IDS, TLP1_IDS) for level, marking in ids.items()}
_MARKING_ID = id_pattern("marking-definition")


class UnknownMarking(ValueError):
    """A marking reference the hub cannot enforce (not a TLP marking it knows)."""


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
    """The most restrictive TLP level among marking ids (TLP 2.0 or 1.0, any case); None
    for none. UnknownMarking for anything else: an unknown marking never reads as none."""
    levels = []
    for ref in marking_refs:
        if not isinstance(ref, str):
            raise UnknownMarking("a marking reference must be a marking-definition id")
        wanted = ref.lower()
        level = _LEVEL_OF.get(wanted)
        if level is None:
            if not _MARKING_ID.fullmatch(wanted):
                raise UnknownMarking(f"{ref[:100]!r} is not a marking-definition id")
            raise UnknownMarking(
                f"{ref} is not a TLP marking this hub knows (TLP 2.0 or the STIX 2.1 TLP "
                "1.0 ids); it cannot enforce it, so it refuses the object"
            )
        levels.append(level)
    return max(levels, key=LEVELS.index) if levels else None


def object_level(obj: dict) -> str | None:
    """The TLP level an object is served under: the most restrictive of its
    `object_marking_refs` and of its `granular_markings` (a part marked RED makes the
    whole object RED: objects are served whole). UnknownMarking if one cannot be read."""
    refs = obj.get("object_marking_refs", [])
    if not isinstance(refs, list):
        raise UnknownMarking("`object_marking_refs` must be a list of marking-definition ids")
    granular = obj.get("granular_markings", [])
    if not isinstance(granular, list) or not all(isinstance(g, dict) for g in granular):
        raise UnknownMarking("`granular_markings` must be a list of granular markings")
    parts = []
    for marking in granular:
        if "marking_ref" in marking:
            parts.append(marking["marking_ref"])
        elif not isinstance(marking.get("lang"), str):  # a language marks nothing secret
            raise UnknownMarking("a granular marking needs a `marking_ref` or a `lang`")
    return level_of([*refs, *parts])


def may_read(level: str | None, *, same_member: bool, same_org: bool) -> bool:
    """Whether a reader may see an object of this level from this publisher."""
    if level == "red":
        return same_member
    if level == "amber+strict":
        return same_org
    return True
