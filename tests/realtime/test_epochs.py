"""Stream epochs (docs/realtime.md, "Epochs"): a resume across an outbox reset or a database restored
from a dump is told `resync_required` with reason `epoch_changed`, never continued in seqs that now
count something else."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest
from django.core.management import call_command
from django.db import connection

from backend.events.epochs import streams_watch
from backend.events.models import UnitSequence
from tests.support.realtime import relocate, relocate_async
from tests.support.ws import collect_updates, connect, recv_json, recv_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _epoch(world) -> str:
    return UnitSequence.objects.get(unit_id=world.unit.id).epoch


async def _greeting_and_next(port: int, world, **query) -> tuple[dict, dict]:
    """The greeting of a (resuming) connection and the first message after it that is not the user's."""
    ws = await connect(port, token=world.token(), **query)
    try:
        hello = await recv_json(ws, 10)
        while (message := await recv_json(ws, 10))["type"] in ("notification", "job_update"):
            pass
        return hello, message
    finally:
        await ws.close()


def test_a_resume_across_an_outbox_reset_is_told_the_epoch_changed(daphne, unit_a):
    # given a client that saw seqs 1-3 of epoch E
    relocate(unit_a, 3)
    epoch = _epoch(unit_a)
    # (positive control: resuming within the epoch replays what it missed)
    hello, replayed = asyncio.run(_greeting_and_next(daphne, unit_a, last_seq=2, epoch=epoch))
    assert (hello["epoch"], hello["seq"], replayed["type"], replayed["seq"]) == (epoch, 3, "data_update", 3)

    # when the unit's outbox is reset (a new epoch, seqs from 0 again) and one change commits
    call_command("reset_streams", "--unit", unit_a.unit.code, "--restart")
    relocate(unit_a, 1)

    # then resuming with (E, 1) is refused with epoch_changed, though seq 1 exists again
    hello, message = asyncio.run(_greeting_and_next(daphne, unit_a, last_seq=1, epoch=epoch))
    assert hello["epoch"] == _epoch(unit_a) != epoch and hello["seq"] == 1
    assert message == {"type": "resync_required", "reason": "epoch_changed", "seq": 1}


def test_a_live_connection_is_told_at_once_and_then_follows_the_new_epoch(daphne, unit_a):
    async def scenario():
        ws = await connect(daphne, token=unit_a.token())
        hello = await recv_json(ws)
        await relocate_async(unit_a, 2)
        before = await collect_updates(ws, 2, timeout=10)
        # when the stream is reset under it
        await asyncio.to_thread(_closing_call, "reset_streams", "--unit", unit_a.unit.code, "--restart")
        resync = await recv_until(ws, "resync_required", timeout=3)
        await relocate_async(unit_a, 2)
        after = await collect_updates(ws, 2, timeout=10)
        await ws.close()
        return hello, before, resync, after

    hello, before, resync, after = asyncio.run(scenario())

    # then it hears epoch_changed with the new epoch (well before any periodic check), then the new seqs
    assert [u["seq"] for u in before] == [hello["seq"] + 1, hello["seq"] + 2]
    assert resync == {"type": "resync_required", "reason": "epoch_changed", "seq": 0, "epoch": _epoch(unit_a)}
    assert resync["epoch"] != hello["epoch"]
    assert [u["seq"] for u in after] == [1, 2]


def _closing_call(*args) -> None:
    try:
        call_command(*args)
    finally:
        connection.close()


# --- a database restored from a dump -------------------------------------------------------------

STREAM_TABLES = ["events_unitsequence", "events_outboxevent"]


def _pg_env() -> tuple[list[str], dict[str, str]]:
    settings = connection.settings_dict
    args = ["-h", settings.get("HOST") or "127.0.0.1", "-p", str(settings.get("PORT") or 5432),
            "-U", settings.get("USER") or "postgres", "-d", settings["NAME"]]
    return args, {**os.environ, "PGPASSWORD": settings.get("PASSWORD") or ""}


def _dump(path) -> None:
    args, env = _pg_env()
    tables = [arg for table in STREAM_TABLES for arg in ("-t", table)]
    subprocess.run(["pg_dump", "-Fc", "--data-only", *tables, "-f", str(path), *args], env=env, check=True)


def _restore(path) -> None:
    """What restoring the dump does to the stream tables: their rows as they were at the dump."""
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(STREAM_TABLES)}")
    args, env = _pg_env()
    subprocess.run(["pg_restore", "--data-only", *args, str(path)], env=env, check=True)


@pytest.fixture
def postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("pg_dump / pg_restore: PostgreSQL only")


def test_after_a_restore_the_relays_watch_gives_a_new_epoch(daphne, unit_a, tmp_path, postgres_only):
    # given a dump taken at seq 2, then three more changes a client saw (seq 5), which the relay saw too
    relocate(unit_a, 2)
    epoch = _epoch(unit_a)
    _dump(tmp_path / "stream.dump")
    relocate(unit_a, 3)
    streams_watch()

    # when the database is restored from the dump (seq 2 again, same epoch), and the relay's next
    # round runs before the restored database has caught up
    _restore(tmp_path / "stream.dump")
    assert (UnitSequence.objects.get(unit_id=unit_a.unit.id).last_seq, _epoch(unit_a)) == (2, epoch)
    assert streams_watch() == [unit_a.id]
    relocate(unit_a, 3)  # the restored database reaches seq 5 again, with other changes

    # then the client's resume from (E, 5), and even from (E, 1), is told the epoch changed
    for last_seq in (5, 1):
        hello, message = asyncio.run(_greeting_and_next(daphne, unit_a, last_seq=last_seq, epoch=epoch))
        assert hello["epoch"] != epoch and hello["seq"] == 5
        assert message == {"type": "resync_required", "reason": "epoch_changed", "seq": 5}


def test_after_a_restore_reset_streams_gives_a_new_epoch_whatever_the_seq(daphne, unit_a, tmp_path, postgres_only):
    # given a dump at seq 2, and a client that saw seq 5 before the database was restored from it
    relocate(unit_a, 2)
    epoch = _epoch(unit_a)
    _dump(tmp_path / "stream.dump")
    relocate(unit_a, 3)
    _restore(tmp_path / "stream.dump")
    relocate(unit_a, 3)  # the restored database is at seq 5 again, with other changes
    # (this is what no check can see from the seqs alone: the resume would pass as continuous)
    hello, message = asyncio.run(_greeting_and_next_or_none(daphne, unit_a, last_seq=5, epoch=epoch))
    assert (hello["epoch"], hello["seq"], message) == (epoch, 5, None)

    # when the operator runs the restore runbook's step
    call_command("reset_streams")

    # then the client is told to refetch
    hello, message = asyncio.run(_greeting_and_next(daphne, unit_a, last_seq=5, epoch=epoch))
    assert hello["epoch"] != epoch
    assert message == {"type": "resync_required", "reason": "epoch_changed", "seq": 5}


async def _greeting_and_next_or_none(port: int, world, **query) -> tuple[dict, dict | None]:
    """Like _greeting_and_next, with None when nothing follows the greeting within a second (a
    replay or a resync is written right after it)."""
    ws = await connect(port, token=world.token(), **query)
    try:
        hello = await recv_json(ws, 10)
        try:
            return hello, await recv_json(ws, 1.0)
        except TimeoutError:
            return hello, None
    finally:
        await ws.close()
