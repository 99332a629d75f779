"""What the hub serves of an anonymous member's objects: nothing that names it.

A member registered `--anonymous` is shown as the hub. Its identity objects are not
stored (an identity is a name), and every reference to an identity in its objects
(`created_by_ref`, `where_sighted_refs`, a sighting's `sighting_of_ref`, a relationship's
`source_ref`/`target_ref`, any `*_ref`/`*_refs`, at any depth), as well as any other
mention of an identity the envelope defines, becomes the hub's identity. The hub cannot
know which name a member publishes under, so it rewrites every identity the member
refers to: what it loses is only whom an anonymous member says it saw, never who it is.
"""

from __future__ import annotations

IDENTITY = "identity--"
DROPPED = "not stored: an anonymous member's identity is never published (the hub's stands in)"


def anonymised(obj: dict, author: str, named: frozenset[str]) -> dict:
    """`obj` with every identity reference, and every mention of an identity in `named`
    (those the envelope defines), replaced by `author`."""
    return _rewrite(obj, author, named, None)


def _rewrite(value, author: str, named: frozenset[str], key: str | None):
    if isinstance(value, dict):
        return {k: _rewrite(v, author, named, k) for k, v in value.items()}
    if isinstance(value, list):
        items = [_rewrite(v, author, named, key) for v in value]
        if key is not None and key.endswith("_refs"):
            strings = list(dict.fromkeys(i for i in items if isinstance(i, str)))
            items = strings + [i for i in items if not isinstance(i, str)]
        return items
    if isinstance(value, str):
        is_ref = key is not None and key.endswith(("_ref", "_refs"))
        if value in named or (is_ref and value.lower().startswith(IDENTITY)):
            return author
    return value
