"""The caller's address, as audit and sign-in throttling need it behind a reverse proxy.

Only when the direct peer is a trusted proxy (``HUIZHEN_TRUSTED_PROXIES``) is
``X-Forwarded-For`` believed, and then read from the right: the first address that is not itself a
trusted proxy is the client. A client cannot forge its address by sending the header itself,
because the proxy appends the address it saw.
"""

from __future__ import annotations

import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(raw: str) -> tuple[Network, ...]:
    """``"10.0.0.1, 172.16.0.0/12"`` → networks; raises ValueError naming a bad entry."""
    networks = []
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return tuple(networks)


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]
) -> str:
    address = peer or ""
    if not trusted or not forwarded_for or not _trusted(address, trusted):
        return address[:64]
    for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # a malformed hop: keep the last address we could vouch for
        address = hop
        if not _trusted(hop, trusted):
            break
    return address[:64]
