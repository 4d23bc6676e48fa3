"""The hub's periodic checks (in-process unit tests; the integration tests of what they achieve, a
filled gap or a closed socket, are in test_resume.py and test_live_rules.py)."""

from __future__ import annotations

import asyncio

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

    async def units_current_seq(unit_ids):
        return {unit_id: 5 for unit_id in unit_ids}

    async def fill(unit_id, unit, upto):
        if unit_id == "unit-1":
            raise ConnectionError("outbox page failed")
        filled.append((unit_id, upto))

    monkeypatch.setattr(hub_module.selectors, "units_current_seq", units_current_seq)
    hub._fill = fill

    # when the catch-up runs
    await hub._catch_up()

    # then the second unit was filled up to the committed seq, and no lock was left held
    assert filled == [("unit-2", 5)]
    assert not any(unit.lock.locked() for unit in hub.units.values())
