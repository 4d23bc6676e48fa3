"""The hub's periodic checks (in-process unit tests; the integration tests of what they achieve, a
filled gap or a closed socket, are in test_resume.py and test_live_rules.py)."""

from __future__ import annotations

import asyncio
import re
import time

from realtime import hub as hub_module
from realtime.hub import Hub, _Unit


async def run_maintenance(hub: Hub, ticks: int, interval: float) -> None:
    task = asyncio.create_task(hub._maintenance())
    await asyncio.sleep(interval * (ticks + 0.5))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_failing_check_never_skips_the_others(settings):
    # given a hub whose catch-up fails at every tick (its database read times out, say)
    settings.REALTIME_REVALIDATE_SECONDS = 0.02
    hub = Hub()
    ran = []

    async def catch_up():
        ran.append("catch_up")
        raise TimeoutError("outbox read timed out")

    async def revalidate_users():
        ran.append("revalidate")

    hub._catch_up, hub._revalidate_users = catch_up, revalidate_users

    # when maintenance runs for a few ticks
    await run_maintenance(hub, ticks=4, interval=settings.REALTIME_REVALIDATE_SECONDS)

    # then the re-validation of users ran at every tick all the same, after each failed catch-up
    assert ran.count("catch_up") >= 3
    assert ran.count("revalidate") == ran.count("catch_up")
    assert ran[:2] == ["catch_up", "revalidate"]


async def test_one_units_failed_fill_does_not_hold_up_the_others(monkeypatch):
    # given two units behind the committed seq, the first of which cannot be filled
    hub = Hub()
    hub.units = {"unit-1": _Unit(), "unit-2": _Unit()}
    filled = []

    async def units_stream(unit_ids):
        return {unit_id: (5, "") for unit_id in unit_ids}

    async def fill(unit_id, unit, upto):
        if unit_id == "unit-1":
            raise ConnectionError("outbox page failed")
        filled.append((unit_id, upto))

    monkeypatch.setattr(hub_module.selectors, "units_stream", units_stream)
    hub._fill = fill

    # when the catch-up runs
    await hub._catch_up()

    # then the second unit was filled up to the committed seq, and no lock was left held
    assert filled == [("unit-2", 5)]
    assert not any(unit.lock.locked() for unit in hub.units.values())


async def test_a_stalled_event_loop_is_logged_with_the_pass_that_held_it(settings, caplog):
    # given a hub watching its loop with a 50 ms threshold, and a periodic pass that blocks the loop
    settings.REALTIME_STALL_WARN_MS = 50
    hub = Hub()
    watch = asyncio.create_task(hub._watch_loop())
    await asyncio.sleep(0.05)

    # when the loop is held for 200 ms by one pass (timed as the hub times its passes), then runs freely
    started = time.monotonic()
    time.sleep(0.2)
    hub._timed("reap closed", started)
    await asyncio.sleep(0.1)
    watch.cancel()
    await asyncio.gather(watch, return_exceptions=True)

    # then one warning says how long the loop stood still and which pass held it; nothing else is logged
    stalls = [r.getMessage() for r in caplog.records if "event loop stalled" in r.getMessage()]
    assert len(stalls) == 1 and hub.stalls_total == 1, stalls
    assert re.fullmatch(r"event loop stalled (\d+) ms with 0 connections \(longest pass meanwhile: reap closed, \d+ ms\)",
                        stalls[0])
    assert 180 <= int(re.match(r"event loop stalled (\d+)", stalls[0]).group(1)) <= 400


async def test_a_loop_that_keeps_running_is_not_reported(settings, caplog):
    settings.REALTIME_STALL_WARN_MS = 50
    hub = Hub()
    watch = asyncio.create_task(hub._watch_loop())
    for _ in range(20):  # short pieces of work, each well under the threshold
        time.sleep(0.01)
        await asyncio.sleep(0.005)
    watch.cancel()
    await asyncio.gather(watch, return_exceptions=True)
    assert hub.stalls_total == 0
    assert not [r for r in caplog.records if "event loop stalled" in r.getMessage()]


class _Listening:
    def __init__(self) -> None:
        self.resyncs: list[tuple] = []

    def resync(self, reason, seq, epoch=None) -> None:
        self.resyncs.append((reason, seq, epoch))


async def test_a_new_epoch_resyncs_the_units_connections_but_a_first_one_does_not(monkeypatch):
    # given a unit followed at epoch "e1" and one joined before its stream existed (no epoch yet)
    hub = Hub()
    known, fresh = _Unit(), _Unit()
    known.epoch, known.delivered = "e1", 7
    hub.units = {"unit-1": known, "unit-2": fresh}
    watching = {"unit-1": _Listening(), "unit-2": _Listening()}
    known.listeners.add(watching["unit-1"])
    fresh.listeners.add(watching["unit-2"])

    async def units_stream(unit_ids):
        return {"unit-1": (0, "e2"), "unit-2": (1, "e9")}

    monkeypatch.setattr(hub_module.selectors, "units_stream", units_stream)
    hub._fill = _no_fill

    # when the catch-up reads the streams: unit 1 was reset (a new epoch, seqs from 0), unit 2 began
    await hub._catch_up()

    # then unit 1's connections are told to refetch in the new epoch, and the hub counts from there;
    # unit 2 simply adopts its first epoch
    assert watching["unit-1"].resyncs == [("epoch_changed", 0, "e2")]
    assert (known.epoch, known.delivered) == ("e2", 0)
    assert watching["unit-2"].resyncs == [] and fresh.epoch == "e9"


async def _no_fill(unit_id, unit, upto):
    return None
