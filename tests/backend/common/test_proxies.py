"""Which address is the client's: the peer, unless a configured proxy forwarded the request."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend.common.proxies import TrustedProxyMiddleware, client_address, parse_networks

NGINX = parse_networks(["172.28.0.10"])
CHAIN = parse_networks(["10.0.0.0/8", "::1"])
addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80)


@given(peer=addresses, forwarded=st.one_of(st.none(), header_text, st.lists(addresses, max_size=4).map(", ".join)))
def test_without_trusted_proxies_a_forwarded_for_header_never_changes_the_address(peer, forwarded):
    assert client_address(peer, forwarded, ()) == peer


@given(peer=addresses.filter(lambda a: a != "172.28.0.10"), forwarded=st.lists(addresses, min_size=1, max_size=4))
def test_an_untrusted_peer_is_the_client_whatever_it_forwards(peer, forwarded):
    assert client_address(peer, ", ".join(forwarded), NGINX) == peer


@given(client=addresses, spoofed=st.lists(addresses, max_size=3))
def test_behind_a_trusted_proxy_the_client_is_what_the_proxy_saw_not_what_the_client_claims(client, spoofed):
    # the client sends its own X-Forwarded-For; the proxy appends the address it saw
    forwarded = ", ".join([*spoofed, client])
    if ipaddress.ip_address(client) in ipaddress.ip_network("10.0.0.0/8") or client == "::1":
        return  # a client inside the trusted range is a proxy by definition
    assert client_address("10.1.2.3", forwarded, CHAIN) == client


def test_a_chain_of_trusted_proxies_is_walked_right_to_left():
    assert client_address("10.0.0.1", "198.51.100.7, 10.0.0.9, 10.0.0.5", CHAIN) == "198.51.100.7"
    assert client_address("10.0.0.1", "garbage, 10.0.0.9", CHAIN) == "10.0.0.1"  # unreadable: not believed
    assert client_address("10.0.0.1", "10.0.0.8, 10.0.0.9", CHAIN) == "10.0.0.8"


def test_a_misconfigured_proxy_list_names_the_bad_entry():
    with pytest.raises(ValueError, match="not-an-ip"):
        parse_networks(["10.0.0.1", "not-an-ip"])


def _seen(scope_in: dict, networks) -> dict:
    seen = {}

    async def app(scope, receive, send):
        seen.update(scope)

    asyncio.run(TrustedProxyMiddleware(app, networks)(scope_in, None, None))
    return seen


def test_an_untrusted_peers_forwarding_headers_are_dropped_before_django_sees_them():
    scope = {"type": "http", "client": ("192.0.2.1", 5000), "scheme": "http",
             "headers": [(b"x-forwarded-for", b"203.0.113.9"), (b"X-Forwarded-Proto", b"https"), (b"host", b"x")]}
    seen = _seen(scope, NGINX)
    assert seen["client"] == ("192.0.2.1", 5000) and seen["scheme"] == "http"
    assert seen["headers"] == [(b"host", b"x")]


def test_a_trusted_proxys_headers_set_the_client_and_the_scheme():
    scope = {"type": "websocket", "client": ("172.28.0.10", 5000), "scheme": "ws",
             "headers": [(b"x-forwarded-for", b"203.0.113.9"), (b"x-forwarded-proto", b"https")]}
    seen = _seen(scope, NGINX)
    assert seen["client"] == ("203.0.113.9", 5000) and seen["scheme"] == "wss"
