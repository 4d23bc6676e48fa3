"""permessage-deflate, negotiated by our Daphne entry point only when WS_DEFLATE asks for it (off by
default: docs/performance.md, "Compression"), with updates arriving intact either way."""

from __future__ import annotations

import asyncio

import pytest

from bench import processes
from tests.support.realtime import relocate_async
from tests.support.ws import collect_updates, connect, recv_json

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def extensions(ws) -> str:
    return ws.response.headers.get("Sec-WebSocket-Extensions", "")


@pytest.mark.parametrize("mode,negotiated", [
    # (autobahn does not announce a context reset the server chooses on its own: the client's
    # decompressor works either way, so the header is the same as for "on")
    ("off", None), ("on", "permessage-deflate"), ("no_context_takeover", "permessage-deflate"),
    ("small", "permessage-deflate"),
])
def test_deflate_is_negotiated_only_when_turned_on_and_updates_arrive_intact(live_env, unit_a, mode, negotiated):
    proc, port = processes.start_daphne({**live_env, "WS_DEFLATE": mode})
    try:
        async def scenario():
            ws = await connect(port, token=unit_a.token())  # the client offers permessage-deflate
            await recv_json(ws)
            seqs = await relocate_async(unit_a, 3)
            updates = await collect_updates(ws, 3, timeout=15)
            header = extensions(ws)
            await ws.close()
            return seqs, updates, header

        seqs, updates, header = asyncio.run(scenario())
    finally:
        proc.stop()
    if negotiated is None:
        assert header == ""
    else:
        assert "permessage-deflate" in header and negotiated in header
    assert [u["seq"] for u in updates] == seqs


def test_an_unknown_mode_refuses_to_start(live_env):
    proc = processes.LiveProcess("daphne-bad-deflate", [
        __import__("sys").executable, "-m", "realtime.daphne", "-p", str(processes.free_port()),
        "backend.config.asgi:application",
    ], {**live_env, "WS_DEFLATE": "maybe"})
    try:
        proc.popen.wait(20)
        output = proc.output()
    finally:
        proc.stop()
    assert proc.popen.returncode != 0 and "WS_DEFLATE must be one of" in output
