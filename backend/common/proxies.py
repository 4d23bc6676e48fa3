"""The client's real address: `X-Forwarded-For` is believed only from a configured proxy.

Daphne serves `make up` directly, with no proxy in front, so by default (TRUSTED_PROXIES empty) the
peer of the TCP connection is the client, and any `X-Forwarded-*` header a client sends is dropped
before Django or the realtime consumer sees it. Behind nginx (compose), TRUSTED_PROXIES names nginx:
a request whose peer is a trusted proxy takes the right-most address of `X-Forwarded-For` that is
not itself a trusted proxy (the one the outermost proxy we trust saw), as RFC 7239 advises.

One ASGI middleware for HTTP and WebSocket alike, so the audit trail (REMOTE_ADDR), the sign-in and
signature throttles, django-axes and the socket limits all read the same address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
FORWARDED_HEADERS = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port", b"x-real-ip",
                     b"forwarded")


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """`10.0.0.0/8`, `172.18.0.5`, `::1`: addresses or networks; raises ValueError naming a bad one."""
    networks = []
    for value in values:
        value = value.strip()
        if value:
            try:
                networks.append(ipaddress.ip_network(value, strict=False))
            except ValueError:
                raise ValueError(f"TRUSTED_PROXIES: {value!r} is not an address or network") from None
    return tuple(networks)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(peer: str, forwarded_for: str | None, networks: tuple[Network, ...]) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy (then the right-most
    untrusted address it forwarded; a malformed entry stops the walk there)."""
    if not forwarded_for or not _trusted(peer, networks):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",")]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # what lies left of a hop we cannot read is the client's to invent
        if not _trusted(hop, networks):
            return hop
    return hops[0]


class TrustedProxyMiddleware:
    """ASGI: rewrite `scope["client"]` (and the scheme) from a trusted proxy's headers; drop the
    forwarding headers of any other peer so nothing downstream can be fooled by them."""

    def __init__(self, app, networks: tuple[Network, ...]):
        self.app, self.networks = app, networks

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            scope = self.resolve(scope)
        return await self.app(scope, receive, send)

    def resolve(self, scope: dict) -> dict:
        client = scope.get("client") or ("", 0)
        peer = client[0]
        if not _trusted(peer, self.networks):
            headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() not in FORWARDED_HEADERS]
            return {**scope, "headers": headers}
        values = {k.lower(): v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() in FORWARDED_HEADERS}
        resolved = dict(scope)
        resolved["client"] = (client_address(peer, values.get(b"x-forwarded-for"), self.networks), client[1])
        proto = (values.get(b"x-forwarded-proto") or "").split(",")[0].strip().lower()
        if proto in ("http", "https"):
            secure = proto == "https"
            resolved["scheme"] = ("https" if secure else "http") if scope["type"] == "http" else ("wss" if secure else "ws")
        return resolved
