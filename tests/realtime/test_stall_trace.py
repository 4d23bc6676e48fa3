"""Daphne's part of the server-side trace (realtime/daphne.py `watch_stalls`): its own passes over
every connection and garbage collections that hold the event loop past REALTIME_STALL_WARN_MS
are logged; quicker ones are not. (The hub's own watch: test_hub_maintenance.py.)"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import time

import daphne.server
import pytest

from realtime import daphne as entry
from realtime import stalls
from realtime.patches import daphne as patched
from tests.support.pipeline import wait_until
from tests.support.realtime import relocate_async
from tests.support.ws import collect_updates, connect, recv_json

PING = json.dumps({"type": "ping", "timestamp": "2026-01-15T10:30:00.000Z"})


class SlowProtocol:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def check_timeouts(self) -> None:
        time.sleep(self.seconds)


class FakeServer:
    """What Daphne's timeout checker reads of its server: the connections."""

    def __init__(self, *protocols) -> None:
        self.connections = {protocol: {} for protocol in protocols}

    def timeout_checker(self) -> None:  # what the pass schedules again
        pass


@pytest.fixture
def watching(monkeypatch, settings, request):
    settings.REALTIME_STALL_WARN_MS = getattr(request, "param", 50)
    # as realtime/daphne.py's main() installs them; all restored after the test
    monkeypatch.setattr(daphne.server.Server, "application_checker", daphne.server.Server.application_checker)
    monkeypatch.setattr(daphne.server.Server, "timeout_checker", patched.sliced_timeout_checker)
    monkeypatch.setattr(stalls, "_watching", False)
    monkeypatch.setattr(stalls, "_stall_limit", [])
    callbacks = list(gc.callbacks)
    stalls.watch_stalls()
    yield
    gc.callbacks[:] = callbacks


class RecordingReactor:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def callLater(self, delay, function, *args):  # noqa: N802 - Twisted's name
        self.calls.append((delay, function, args))


class QuickProtocol:
    def __init__(self, checked: list) -> None:
        self.checked = checked

    def check_timeouts(self) -> None:
        self.checked.append(self)


def test_daphnes_timeout_pass_runs_in_slices_with_the_reactor_free_between_them(monkeypatch):
    reactor = RecordingReactor()
    monkeypatch.setattr(daphne.server, "reactor", reactor)
    checked: list = []
    server = FakeServer(*(QuickProtocol(checked) for _ in range(1200)))
    gone = list(server.connections)[700]

    # when the pass starts, then the reactor runs what it scheduled (one connection closes meanwhile)
    patched.sliced_timeout_checker(server)
    first = len(checked)
    del server.connections[gone]
    while reactor.calls and reactor.calls[-1][0] == 0:
        _, function, args = reactor.calls.pop()
        function(*args)

    # then it checked 500 connections per turn, skipped the closed one, and comes back in 2 s
    assert first == patched.CONNECTION_SLICE == 500
    assert len(checked) == 1199 and gone not in checked
    assert reactor.calls == [(2, server.timeout_checker, ())]


class FinishedApplication:
    """What Daphne keeps as a connection's application instance, done."""

    def __init__(self, exception: BaseException | None = None, cancelled: bool = False) -> None:
        self._exception, self._cancelled = exception, cancelled

    def done(self) -> bool:
        return True

    def exception(self):
        if self._cancelled:
            raise asyncio.CancelledError()
        return self._exception


class ReapedProtocol:
    def __init__(self) -> None:
        self.exceptions: list = []

    def handle_exception(self, exception) -> None:
        self.exceptions.append(exception)


def test_daphnes_reaping_pass_runs_in_slices_and_does_what_daphnes_does(monkeypatch, caplog):
    reactor = RecordingReactor()
    monkeypatch.setattr(daphne.server, "reactor", reactor)
    server = FakeServer()
    server.application_close_timeout = 10
    server.application_checker = lambda: None
    # 1,200 connections: most open with a running application, and four with something to do
    running = type("Running", (), {"done": lambda self: False, "cancel": lambda self: None})
    for _ in range(1196):
        server.connections[ReapedProtocol()] = {"application_instance": running()}
    gone_and_done, failed, open_and_done, hung = (ReapedProtocol() for _ in range(4))
    killed = []
    hung_app = type("Hung", (), {"done": lambda self: False, "cancel": lambda self: killed.append(self)})()
    server.connections[gone_and_done] = {"disconnected": time.time(), "application_instance": FinishedApplication(cancelled=True)}
    server.connections[failed] = {"application_instance": FinishedApplication(ValueError("boom"))}
    server.connections[open_and_done] = {"application_instance": FinishedApplication()}
    server.connections[hung] = {"disconnected": time.time() - 11, "application_instance": hung_app}

    with caplog.at_level(logging.ERROR, logger="daphne.server"):
        patched.sliced_application_checker(server)
        turns = 1
        while reactor.calls and reactor.calls[-1][0] == 0:
            _, function, args = reactor.calls.pop()
            function(*args)
            turns += 1

    # then it took three turns of 500, and comes back in a second
    assert turns == 3 and reactor.calls == [(1, server.application_checker, ())]
    # a connection closed with its application finished is forgotten
    assert gone_and_done not in server.connections
    # a failed application is logged and reported to its (still open) connection, then forgotten
    assert [str(e) for e in failed.exceptions] == ["boom"]
    assert "application_instance" not in server.connections[failed]
    assert any("Exception inside application: boom" in r.getMessage() for r in caplog.records)
    # a finished application of an open connection is dropped, the connection kept
    assert server.connections[open_and_done] == {}
    # an application that outlived its disconnect by the close timeout is cancelled
    assert killed == [hung_app] and hung in server.connections


def test_a_slow_pass_of_daphne_over_its_connections_is_logged(watching, caplog, monkeypatch):
    monkeypatch.setattr(daphne.server, "reactor", type("NoReactor", (), {"callLater": lambda *a: None})())
    with caplog.at_level(logging.WARNING, logger="realtime.daphne"):
        daphne.server.Server.timeout_checker(FakeServer(SlowProtocol(0.04), SlowProtocol(0.04)))  # ~80 ms
        daphne.server.Server.timeout_checker(FakeServer(SlowProtocol(0.0), SlowProtocol(0.0)))  # quick
    lines = [r.getMessage() for r in caplog.records if r.name == "realtime.daphne"]
    assert len(lines) == 1, lines
    assert lines[0].startswith("daphne's timeout_checker took ") and lines[0].endswith(" ms over 2 connections")


@pytest.mark.parametrize("watching", [1], indirect=True)  # 1 ms: less than any full collection here
def test_a_long_full_garbage_collection_is_logged(watching, caplog):
    garbage = [[i] for i in range(300_000)]
    with caplog.at_level(logging.WARNING, logger="realtime.daphne"):
        caplog.clear()  # collections the allocations above set off on their own
        gc.collect(2)
        lines = [r.getMessage() for r in caplog.records if "garbage collection" in r.getMessage()]
    del garbage
    assert len(lines) == 1 and lines[0].startswith("a full garbage collection took "), lines


@pytest.mark.parametrize("watching", [5], indirect=True)
def test_a_long_young_collection_is_logged_with_its_generation_and_a_quick_one_is_not(watching, caplog):
    # given 300,000 objects that survived a young collection, waiting in generation 1 (as a connect
    # burst leaves the connections' state there until generation 1 is next collected)
    gc.collect()
    gc.disable()
    try:
        survivors = [[i] for i in range(300_000)]
        gc.collect(0)
        with caplog.at_level(logging.WARNING, logger="realtime.daphne"):
            caplog.clear()
            gc.collect(1)  # walks all of them: tens of ms
            slow = [r.getMessage() for r in caplog.records if "garbage collection" in r.getMessage()]
            caplog.clear()
            gc.collect(0)  # an empty generation 0: well under 5 ms
            quick = [r.getMessage() for r in caplog.records if "garbage collection" in r.getMessage()]
    finally:
        gc.enable()
    del survivors
    assert len(slow) == 1 and slow[0].startswith("a generation-1 garbage collection took "), slow
    assert quick == []


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_real_daphne_logs_a_stall_of_its_event_loop_and_loses_nothing(spawn_daphne, unit_a):
    # given a Daphne whose message handling holds its event loop for 300 ms (a blocking call in
    # async code, the kind of bug the trace is for)
    proc, port = spawn_daphne(FAULT_POINTS="consumer.receive=block:0.3")

    async def scenario():
        ws = await connect(port, token=unit_a.token())
        await recv_json(ws)
        await ws.send(PING)  # the loop stands still here
        await recv_json(ws)  # the pong, late
        seqs = await relocate_async(unit_a, 2)
        updates = await collect_updates(ws, 2, timeout=15)
        await ws.close()
        return seqs, updates

    seqs, updates = asyncio.run(scenario())

    # then the process says how long its loop stood still, and the client got every update after it
    wait_until(lambda: "event loop stalled" in proc.output(), 10, "the stall warning")
    stalled = [int(m) for m in re.findall(r"event loop stalled (\d+) ms with \d+ connections", proc.output())]
    assert any(280 <= ms <= 1000 for ms in stalled), stalled
    assert [u["seq"] for u in updates] == seqs


@pytest.fixture
def gc_restored():
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_start_up_objects_are_frozen_out_of_every_later_collection(gc_restored, monkeypatch):
    # given a process that has loaded Django (the URL configuration not yet imported, as in a
    # Daphne that has served nothing)
    from django.conf import settings
    from django.urls import clear_url_caches

    clear_url_caches()
    gc.unfreeze()

    # when Daphne's reactor starts
    entry.freeze_startup()

    # then the URL configuration (and every view) was loaded first, and all of it is out of the
    # collector's sight: a full collection walks only what came after
    from django.urls import get_resolver

    assert get_resolver().url_patterns and settings.ROOT_URLCONF in __import__("sys").modules
    frozen = gc.get_freeze_count()
    assert frozen > 10_000
    assert len(gc.get_objects()) < frozen / 10


def test_daphne_collects_generation_1_after_every_second_young_collection(gc_restored, monkeypatch):
    monkeypatch.delenv("GC_THRESHOLD", raising=False)
    entry.tune_gc()
    assert gc.get_threshold() == (50_000, 1, 100)
    monkeypatch.setenv("GC_THRESHOLD", "700,10,10")
    entry.tune_gc()
    assert gc.get_threshold() == (700, 10, 10)


def test_the_benchmark_sums_up_a_daphnes_trace_from_its_log():
    from bench.realtime import stall_trace

    log = "\n".join([
        "2026-12-02 07:37:40,732 WARNING realtime.hub event loop stalled 229 ms with 0 connections",
        "2026-12-02 07:38:57,961 WARNING realtime.daphne a generation-1 garbage collection took 604 ms"
        " (93698 objects collected)",
        "2026-12-02 07:38:57,966 WARNING realtime.daphne daphne's application_checker took 609 ms over 3409 connections",
        "2026-12-02 07:38:58,500 WARNING realtime.hub event loop stalled 612 ms with 3409 connections"
        " (longest pass meanwhile: reap closed, 9 ms)",
        "2026-12-02 07:39:04,027 WARNING realtime.daphne daphne's timeout_checker took 66 ms over 500 connections",
        "2026-12-02 07:39:06,946 WARNING realtime.daphne daphne's timeout_checker took 54 ms over 500 connections",
        "2026-12-02 07:39:32,275 WARNING realtime.daphne a full garbage collection took 797 ms (263004 objects collected)",
        "2026-12-02 07:39:33,000 INFO something else entirely",
    ])
    assert stall_trace(log) == {
        "stalls": 2, "longest_stall_ms": 612, "stalled_ms_total": 841, "most_connections_in_a_stall": 3409,
        "named": {
            "collection full": {"count": 1, "longest_ms": 797},
            "collection generation-1": {"count": 1, "longest_ms": 604},
            "pass application_checker": {"count": 1, "longest_ms": 609},
            "pass timeout_checker": {"count": 2, "longest_ms": 66},
        },
    }


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_real_daphnes_sliced_reaping_pass_kills_an_application_that_outlives_its_client(spawn_daphne, unit_a):
    # given a Daphne (application close timeout 5 s) whose consumer is busy with a client message
    # for 8 s, and the client leaves meanwhile
    proc, port = spawn_daphne(FAULT_POINTS="consumer.receive=pause:8")

    async def scenario():
        ws = await connect(port, token=unit_a.token())
        await recv_json(ws)
        await ws.send(PING)
        await asyncio.sleep(0.3)
        await ws.close()

    asyncio.run(scenario())

    # then the reaping pass (sliced by realtime/daphne.py) cancels the application 5 s after the
    # disconnect, as Daphne's own does, and nothing fails in the process
    wait_until(lambda: "took too long to shut down and was killed" in proc.output(), 15, "the reaping pass")
    assert "Traceback" not in proc.output() and "Unhandled Error" not in proc.output()


def test_the_bench_splits_the_hubs_own_commit_to_handover_from_two_readings():
    from bench.realtime import server_side_latency

    # given two readings of the hubs' summed histograms (bucket upper bound in seconds: observations)
    before = {"0.05": 100.0, "0.1": 10.0, "0.25": 0.0, "+Inf": 0.0}
    after = {"0.05": 1100.0, "0.1": 960.0, "0.25": 50.0, "+Inf": 0.0}

    # then what was handed over between them: 2,000 observations, 97.5 % within 100 ms
    side = server_side_latency(before, after)
    assert side == {"observations": 2000, "share_within_100_ms": 0.975, "p50_bucket_ms": "<= 50",
                    "p99_bucket_ms": "<= 250"}
    assert server_side_latency(after, after) == {"observations": 0}


def test_the_benchmark_sums_up_the_workers_late_publishes_from_its_log():
    from bench.realtime import publish_trace

    line = ("2026-12-05 04:51:51,707 WARNING backend.events.outbox 2 event(s) (unit u seq 7 .. unit u seq 8) reached "
            "the channel layer {} ms after they were written: {} ms before the send (the rest of the transaction, "
            "COMMIT), {} ms the send")
    log = "\n".join([line.format(61, 58, 3), "2026-12-05 04:51:52,000 WARNING other", line.format(140, 12, 128)])
    assert publish_trace(log) == {"late_publishes": 2, "longest_ms": 140, "longest_before_send_ms": 12,
                                  "longest_send_ms": 128}
    assert publish_trace("") == {"late_publishes": 0, "longest_ms": 0, "longest_before_send_ms": 0,
                                 "longest_send_ms": 0}
