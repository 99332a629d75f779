"""Who sent a request: the peer's address, or what a trusted proxy says it saw.

`X-Forwarded-For` is the client's own word unless a proxy we run put it there, and
tracing links accounts by address: so it is read only from peers in `trusted_proxies`,
right to left (each trusted hop appends what it saw), and only addresses count.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(entries: Iterable[object]) -> tuple[Network, ...]:
    """Addresses or CIDR ranges, as `gateway.trusted_proxies` lists them."""
    return tuple(ipaddress.ip_network(str(entry), strict=False) for entry in entries)


def client_address(
    peer: str | None, forwarded: str | None, trusted: Sequence[Network]
) -> str | None:
    """The right-most address in the chain peer ← X-Forwarded-For that is not a trusted
    proxy. A hop that is not an address ends the walk at the last address known good."""
    known = peer
    if peer is None or not _within(peer, trusted):
        return peer
    for hop in reversed((forwarded or "").split(",")):
        try:
            address = str(ipaddress.ip_address(hop.strip()))
        except ValueError:
            return known
        known = address
        if not _within(address, trusted):
            return address
    return known


def _within(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)
