"""Third-party internals we replace or lean on were written against exact versions: an upgrade must
fail here, loudly, until someone has read the new upstream code and checked each replacement against
it (backend/common/upstream.py). One module per library replaces internals; two more lean on them:
realtime/frames.py (Twisted's tcp.Connection buffers and HTTPChannel) and realtime/consumers.py
(Channels' AsyncConsumer.__call__ and dispatch, replaced in the consumer class)."""

from __future__ import annotations

import importlib
from importlib import metadata

import pytest

from backend.common import upstream

PATCH_MODULES = [
    "realtime.patches.daphne", "realtime.patches.autobahn", "backend.jobs.broker", "backend.accounts.simplejwt_stamp",
]
LEANED_ON = {"twisted": "26.10.0", "channels": "4.3.2"}


@pytest.mark.parametrize("name", PATCH_MODULES)
def test_each_patch_module_names_its_library_version_and_upstream_and_matches_the_installed_one(name):
    module = importlib.import_module(name)
    assert module.UPSTREAM, f"{name}: say what upstream knows of the problem"
    assert metadata.version(module.LIBRARY) == module.WRITTEN_AGAINST, (
        f"{module.LIBRARY} is {metadata.version(module.LIBRARY)}: re-read {name} against it, "
        f"then update its WRITTEN_AGAINST"
    )


@pytest.mark.parametrize("package", sorted(LEANED_ON))
def test_the_internals_we_lean_on_match_the_installed_version(package):
    assert metadata.version(package) == LEANED_ON[package], (
        f"{package} is {metadata.version(package)}: re-read realtime/frames.py and realtime/consumers.py "
        f"against it, then update LEANED_ON"
    )


def test_every_module_that_replaces_internals_is_listed():
    # given every module of ours that imports a library's internals to replace them
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    declaring = {
        ".".join(path.relative_to(root).with_suffix("").parts)
        for folder in ("backend", "realtime", "workers")
        for path in (root / folder).rglob("*.py")
        if "\nWRITTEN_AGAINST = " in path.read_text()
    }
    # then each is checked here
    assert declaring == set(PATCH_MODULES)


def test_another_installed_version_is_logged_when_a_patch_installs(caplog):
    assert upstream.check_version("daphne", metadata.version("daphne"))
    with caplog.at_level("WARNING", logger="backend.common.upstream"):
        assert not upstream.check_version("daphne", "0.0.1")
    assert "written against 0.0.1" in caplog.text


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
