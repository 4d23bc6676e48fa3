"""realtime/daphne.py and realtime/frames.py replace or lean on internals of Daphne, autobahn and
Twisted (Daphne's create_application and its passes over the connections, its WebRequest.process
upgrade, autobahn's per-connection options and `is_closed`, Twisted's HTTPChannel.requests and
tcp.Connection buffers). They were written against these versions: an upgrade must fail here, loudly,
until someone has read the new upstream code and checked each replacement against it."""

from __future__ import annotations

from importlib import metadata

import pytest

WRITTEN_AGAINST = {"daphne": "4.2.3", "autobahn": "26.10.2", "twisted": "26.10.0"}


@pytest.mark.parametrize("package", sorted(WRITTEN_AGAINST))
def test_the_replaced_internals_match_the_installed_version(package):
    assert metadata.version(package) == WRITTEN_AGAINST[package], (
        f"{package} is {metadata.version(package)}: re-read realtime/daphne.py and realtime/frames.py "
        f"against it, then update WRITTEN_AGAINST"
    )


def test_the_upgrade_and_close_paths_still_have_the_shape_the_cycle_breakers_expect():
    # given the upstream code the cycle breakers of issue 34 rely on
    import inspect

    from autobahn.websocket.protocol import WebSocketProtocol
    from daphne.http_protocol import WebRequest
    from twisted.web.http import HTTPChannel

    # then Daphne still hands the transport over (and drops its own) when it upgrades a request,
    # autobahn still fires is_closed with the protocol, and HTTPChannel still lists its requests
    assert "transport, self.transport = self.transport, None" in inspect.getsource(WebRequest.process)
    assert "txaio.resolve(self.is_closed, self)" in inspect.getsource(WebSocketProtocol._connectionLost)
    assert "self.requests.append(request)" in inspect.getsource(HTTPChannel)
