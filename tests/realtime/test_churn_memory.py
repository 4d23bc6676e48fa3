"""Clients that come and go leave nothing behind in a Daphne (issue 34, docs/performance.md "Clients
that come and go"): each closed connection's objects are freed when it closes, by reference
counting, not left in reference cycles for a rare full collection, and the process's RSS stays flat
over rounds of a thousand connect/close cycles.

Real Daphne, real picows clients (bench/wsclient.py, as the soak benchmark), real Redis. The
clients are a few users with many sockets each, so the per-user connection cap is lifted for the
Daphne under test, on purpose (WS_MAX_CONNECTIONS_PER_USER); nothing else is changed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest

from bench.soak import churn_round
from tests.support.auth import access_token
from tests.support.realtime import make_users, raise_open_files_limit

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ROUND = 1000
# What three rounds of a thousand cycles may add to the RSS of a Daphne that keeps nothing:
# 1 KB a cycle (noise of the allocator; a kept connection cost ~5 KB before issue 34).
MAX_GROWTH_BYTES = 3 * ROUND * 1024


def _census(proc, path, collect: bool) -> dict:
    """Ask the Daphne for a memory census (realtime/census.py) and read it."""
    before = len(path.read_text().splitlines()) if path.exists() else 0
    os.kill(proc.popen.pid, signal.SIGUSR1 if collect else signal.SIGUSR2)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if text.endswith("\n"):  # (a line being written is not read yet)
            lines = text.splitlines()
            if len(lines) > before:
                return json.loads(lines[-1])
        time.sleep(0.05)
    raise TimeoutError(f"no census from the Daphne:\n{proc.output()[-2000:]}")


def _settled(proc, path) -> dict:
    """A census once Daphne has reaped every closed connection (its application checker runs
    every second) and the hub holds none."""
    deadline = time.monotonic() + 20
    while True:
        census = _census(proc, path, collect=False)
        tables = census["tables"]
        if (tables["daphne_connections"] == 0 and tables["hub_connections"] == 0) or time.monotonic() > deadline:
            return census
        time.sleep(0.5)


@pytest.fixture
def churn_daphne(spawn_daphne, unit_a, tmp_path):
    raise_open_files_limit(8192)
    tokens = [access_token(user) for user in make_users(unit_a, 10)]
    census = tmp_path / "census.jsonl"
    proc, port = spawn_daphne(WS_MAX_CONNECTIONS_PER_USER="100000", REALTIME_CENSUS=str(census))
    proc.wait_for_output("memory census armed")
    return proc, port, tokens, census


@pytest.mark.parametrize("kind", ["plain", "presence", "refused"])
def test_a_closed_connection_leaves_no_reference_cycle_behind(churn_daphne, kind):
    # given a Daphne that has served and closed a first round of connections, then collected
    proc, port, tokens, census = churn_daphne
    presence = kind == "presence"
    if kind == "refused":
        tokens = ["not-a-token"]  # accepted, then closed 4001 before any greeting
    asyncio.run(churn_round(port, tokens, 200, presence=presence, attempts=1))
    _settled(proc, census)
    _census(proc, census, collect=True)

    # when 300 more clients connect, read their greeting (or their 4001) and close
    done = asyncio.run(churn_round(port, tokens, 300, presence=presence, attempts=1))
    assert (done["connected"], done["refused"]) == ((0, 300) if kind == "refused" else (300, 0)), done
    _settled(proc, census)

    # then a full collection finds (almost) nothing unreachable: every connection's objects were
    # freed as it closed. Before issue 34 each one stayed in four reference cycles (its HTTP
    # channel and handshake request, autobahn's protocol and its is_closed Deferred, the consumer
    # and its frame writer, the pass over Daphne's connections that listed it): ~70 objects per
    # connection, kept until a full collection, which the tuned collector runs rarely.
    found = _census(proc, census, collect=True)
    per_connection = found["collected"] / 300
    assert per_connection < 1, (per_connection, found["garbage_by_type"])


def test_rss_stays_flat_while_clients_come_and_go(churn_daphne):
    # given a Daphne warmed up by two rounds of a thousand connect/close cycles (the first rounds
    # grow the allocator's arenas and Redis's connection pool once: ~2.5 MB, then no more)
    proc, port, tokens, census = churn_daphne

    def churn() -> int:
        done = asyncio.run(churn_round(port, tokens, ROUND))
        assert done["connected"] == ROUND, done
        return _settled(proc, census)["rss_bytes"]

    churn()
    baseline = churn()

    # when three more rounds of a thousand clients connect, read their greeting and close
    after = [churn() for _ in range(3)]

    # then the process grew by at most the allocator's noise: ~1 KB a cycle, not the ~5 KB a cycle
    # (5 MB a round, no plateau) that a closed connection used to keep
    growth = after[-1] - baseline
    assert growth <= MAX_GROWTH_BYTES, f"RSS grew {growth / 2**20:.1f} MB over {3 * ROUND} cycles: {after}"


def test_a_pass_over_daphnes_connections_lets_go_of_them_when_it_ends(monkeypatch):
    # given Daphne's timeout pass over 1,200 connections, its slices run by a reactor of our own
    import gc
    import weakref

    import daphne.server

    from realtime.patches import daphne as entry

    class Reactor:
        calls: list = []

        def callLater(self, delay, function, *args):  # noqa: N802 - Twisted's name
            self.calls.append((delay, function, args))

    class Protocol:
        def check_timeouts(self) -> None:
            pass

    class Server:
        def __init__(self) -> None:
            self.connections = {Protocol(): {} for _ in range(1200)}

        def timeout_checker(self) -> None:
            pass

    reactor = Reactor()
    monkeypatch.setattr(daphne.server, "reactor", reactor)
    server = Server()
    closed = weakref.ref(next(iter(server.connections)))
    gc.disable()
    try:
        entry.sliced_timeout_checker(server)
        while reactor.calls and reactor.calls[-1][0] == 0:
            _, function, args = reactor.calls.pop()
            function(*args)
        # when one of the connections is closed and reaped once the pass is over
        del server.connections[closed()]
        reactor.calls.clear()

        # then nothing holds it any more, without a collection: the pass's list of connections was
        # dropped with it (a pass that scheduled itself as a closure kept the list in a cycle)
        assert closed() is None
    finally:
        gc.enable()
