"""The hub's records: what parsing a request makes (taxii.py) and what the store keeps
and answers with (store.py), apart from both so that parsing never imports storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from distillguard.exchange.hub.corroboration import Facts


@dataclass(frozen=True)
class Member:
    member_id: str
    org: str
    anonymous: bool


@dataclass(frozen=True)
class Collection:
    collection_id: str
    name: str
    description: str | None
    can_read: bool
    can_write: bool


@dataclass(frozen=True)
class StoredObject:
    """One version of an object as it is stored: enough to serve, page and list it."""

    object_id: str
    type: str
    version: str  # TAXII timestamp
    spec_version: str
    tlp: str | None
    body: str
    facts: Facts | None = field(default=None, compare=False)  # a posted indicator or sighting
    refusal: str | None = field(default=None, compare=False)  # why it is not stored, if not


@dataclass(frozen=True)
class Page:
    rows: list[tuple[int, int, StoredObject]]  # (added_us, seq, object)
    more: bool

    @property
    def next(self) -> str | None:
        if not self.more or not self.rows:
            return None
        added, seq, _ = self.rows[-1]
        return f"{added}-{seq}"


@dataclass
class Query:
    """The TAXII filters of one request (already parsed and checked)."""

    added_after_us: int | None = None
    ids: Sequence[str] = ()
    types: Sequence[str] = ()
    spec_versions: Sequence[str] = ()
    versions: Sequence[str] = ("last",)  # "last", "first", "all" or TAXII timestamps
    limit: int = 100
    after: tuple[int, int] | None = None  # the `next` cursor: (added_us, seq)


TAKEN = (
    "this id is taken in this collection by an object this member may not version; "
    "STIX ids are random (UUID version 4): give the object a new one"
)


@dataclass
class Held:
    """What a collection holds of the objects an envelope names, as its poster may know
    it: a status never tells a member more than it may read (an object it may not read
    is only ever "taken", never "already there" nor another organisation's)."""

    owner: dict[str, str] = field(default_factory=dict)  # object id -> publisher org
    versions: set[tuple[str, str]] = field(default_factory=set)  # (id, version) held
    readable: set[tuple[str, str]] = field(default_factory=set)  # those the poster reads
    readable_ids: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)  # ids the collection held before

    def refusal(self, member: Member, object_id: str, key: tuple[str, str]) -> dict | None:
        if key in self.readable:
            return None  # "already there"
        if key in self.versions:
            return {"message": TAKEN}
        if self.owner.get(object_id, member.org) == member.org:
            return None
        if object_id in self.readable_ids:
            # Another organisation's object: a new version (say, `revoked`) from anyone
            # else would rewrite what its publisher said.
            return {"message": "only its publisher's organisation may version it"}
        return {"message": TAKEN}

    def add(self, member: Member, key: tuple[str, str]) -> None:
        self.owner.setdefault(key[0], member.org)
        self.versions.add(key)
        self.readable.add(key)
        self.readable_ids.add(key[0])
