"""What a reconnecting client is owed (docs/realtime.md, "Resuming"): the state of its user's queued and
running jobs, the unread notifications created since its `last_seq`, and read state across tabs as
live `notification_read` frames. On a real Daphne."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import jsonschema
import pytest
from django.db import connection, transaction
from django.utils import timezone

from backend.accounts.models import User
from backend.events.models import OutboxEvent
from backend.events.schema import SCHEMAS
from backend.jobs.models import Job, JobStatus
from backend.jobs.services import job_push
from backend.notifications.models import Notification
from backend.notifications.selectors import OWED_MARGIN
from backend.notifications.services import Draft, notify
from tests.support.auth import access_token
from tests.support.realtime import relocate
from tests.support.ws import connect, recv_json, recv_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _valid(message: dict) -> dict:
    jsonschema.validate(message, SCHEMAS[message["type"]], cls=jsonschema.Draft202012Validator)
    return message


def _job(user, status: str, done: int = 0) -> Job:
    return Job.objects.create(kind="crate.relocate", unit=user.unit, requested_by=user, status=status,
                              progress={"total": 4, "done": done, "failed": 0})


def _notify(user, title: str, created_at=None) -> Notification:
    with transaction.atomic():
        (row,) = notify([Draft(user_id=user.id, kind="job_finished", title=title, body="", link_entity="job",
                               link_id=user.id)])
    if created_at is not None:
        Notification.objects.filter(id=row.id).update(created_at=created_at)
    return row


async def _frames_after_greeting(port: int, token: str, seconds: float = 1.0, **query) -> tuple[dict, list[dict]]:
    ws = await connect(port, token=token, **query)
    hello = await recv_json(ws, 10)
    frames = []
    try:
        while True:
            frames.append(_valid(await recv_json(ws, seconds)))
    except TimeoutError:
        pass
    await ws.close()
    return hello, frames


def test_a_resume_gets_its_users_unfinished_jobs_and_the_notifications_it_missed(daphne, unit_a):
    user = unit_a.store
    # given a client that saw seq 2 of its unit; a notification from before that, one read, one since
    relocate(unit_a, 2)
    seen_at = OutboxEvent.objects.get(unit=unit_a.unit, seq=2).created_at
    _notify(user, "before", created_at=seen_at - OWED_MARGIN - timedelta(minutes=1))
    read = _notify(user, "read since")
    Notification.objects.filter(id=read.id).update(read_at=timezone.now())
    missed = _notify(user, "missed")
    # and its user's jobs: one queued, one running, one finished; a colleague's running job
    queued, running = _job(user, JobStatus.QUEUED), _job(user, JobStatus.RUNNING, done=2)
    _job(user, JobStatus.SUCCEEDED, done=4)
    _job(unit_a.approver, JobStatus.RUNNING)

    # when it resumes with last_seq=2
    hello, frames = asyncio.run(_frames_after_greeting(daphne, unit_a.token(user), last_seq=2, epoch=""))

    # then it gets the two unfinished jobs' state and the one unread notification created since seq 2
    jobs = [f["job"] for f in frames if f["type"] == "job_update"]
    assert [(j["id"], j["status"], j["progress"]["done"]) for j in jobs] == [
        (str(queued.id), "queued", 0), (str(running.id), "running", 2)]
    notes = [f["notification"] for f in frames if f["type"] == "notification"]
    assert [n["id"] for n in notes] == [str(missed.id)]
    assert all(f.get("counted") is True for f in frames if f["type"] == "notification")
    assert hello["unread_notifications"] == 2  # "before" and "missed": the greeting counts every unread one

    # and a connection without last_seq (a fresh start, which reads the lists) is owed nothing
    _, fresh = asyncio.run(_frames_after_greeting(daphne, unit_a.token(user)))
    assert fresh == []
    # and the colleague's resume gets its own job, not the store user's
    _, theirs = asyncio.run(_frames_after_greeting(daphne, unit_a.token(unit_a.approver), last_seq=2))
    assert [f["job"]["status"] for f in theirs if f["type"] == "job_update"] == ["running"]
    assert {f["job"]["id"] for f in theirs if f["type"] == "job_update"}.isdisjoint({str(queued.id), str(running.id)})


def _owed_notes(port: int, user, last_seq: int) -> list[str]:
    """The titles of the notifications a resume of `user`'s unit stream from `last_seq` is sent."""
    user.refresh_from_db()
    _, frames = asyncio.run(_frames_after_greeting(port, access_token(user), last_seq=last_seq))
    return [f["notification"]["title"] for f in frames if f["type"] == "notification"]


def test_a_resume_owes_no_notification_of_a_unit_the_user_left(daphne, unit_a, unit_b):
    # given a user of unit A with an unread notification about A, written after unit B's seq 2
    user = unit_a.requester
    relocate(unit_b, 2)
    _notify(user, "about the old unit")
    # when the user is moved to unit B, is notified about B there, and resumes B's stream after seq 2
    User.objects.filter(id=user.id).update(unit=unit_b.unit)
    _notify(user, "about the new unit")
    owed = _owed_notes(daphne, user, last_seq=2)

    # then only the new unit's notification is owed (as the lists and the count show only B's);
    # the positive control shows the same resume does send what it owes
    assert owed == ["about the new unit"]


# (On SQLite the open transaction would hold the database's one write lock against the relocation.)
@pytest.mark.postgres
@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL")
def test_a_resume_owes_a_notification_written_before_its_last_seq_but_committed_after_it(daphne, unit_a):
    # given a notification written (its created_at taken) in a transaction that stays open...
    user = unit_a.store
    written, commit = threading.Event(), threading.Event()

    def slow_transaction():
        try:
            with transaction.atomic():
                _notify(user, "slow")
                written.set()
                assert commit.wait(30)
        finally:
            connection.close()

    slow = threading.Thread(target=slow_transaction)
    slow.start()
    try:
        assert written.wait(10)
        # ...while the unit's seq 1 commits, is seen by a client, and the client goes away
        async def see_seq_1():
            ws = await connect(daphne, token=unit_a.token(user))
            await recv_json(ws, 10)
            await asyncio.to_thread(relocate, unit_a, 1)
            update = await recv_until(ws, "data_update", timeout=5)
            await ws.close()
            return update["seq"]

        assert asyncio.run(see_seq_1()) == 1
    finally:
        commit.set()  # then the slow transaction commits: its frame reached nobody
        slow.join(30)
    note = Notification.objects.get(title="slow")
    assert note.created_at < OutboxEvent.objects.get(unit=unit_a.unit, seq=1).created_at  # the edge itself

    # when the client resumes after seq 1, then the notification is owed all the same
    assert _owed_notes(daphne, user, last_seq=1) == ["slow"]
    # and one written longer than OWED_MARGIN before seq 1 is not (its transaction committed long
    # before: the client had it live, or in the list it read)
    Notification.objects.filter(id=note.id).update(created_at=note.created_at - OWED_MARGIN - timedelta(seconds=5))
    assert _owed_notes(daphne, user, last_seq=1) == []


def test_read_and_read_all_reach_the_users_other_tabs_and_nobody_else(daphne, unit_a, api):
    user, colleague = unit_a.store, unit_a.approver
    first, second = _notify(user, "one"), _notify(user, "two")
    _notify(colleague, "theirs")
    client = api(user)

    async def scenario():
        tab = await connect(daphne, token=unit_a.token(user))
        other = await connect(daphne, token=unit_a.token(colleague))
        for ws in (tab, other):
            await recv_json(ws)
        # when the user reads one notification in another tab, then all of them
        await asyncio.to_thread(client.post, f"/api/notifications/{first.id}/read/")
        one = _valid(await recv_until(tab, "notification_read", timeout=3))
        await asyncio.to_thread(client.post, "/api/notifications/read-all/")
        everything = _valid(await recv_until(tab, "notification_read", timeout=3))
        # (positive control for the colleague's silence: its own read-all reaches it)
        colleague_client = api(colleague)
        await asyncio.to_thread(colleague_client.post, "/api/notifications/read-all/")
        own = _valid(await recv_until(other, "notification_read", timeout=3))
        await tab.close()
        await other.close()
        return one, everything, own

    one, everything, own = asyncio.run(scenario())

    # then the tab hears exactly which, then all; the colleague hears only its own read-all
    assert one == {"type": "notification_read", "ids": [str(first.id)], "all": False}
    assert everything == {"type": "notification_read", "ids": [], "all": True}
    assert own == {"type": "notification_read", "ids": [], "all": True}
    assert Notification.objects.filter(id=second.id, read_at__isnull=False).exists()


def test_reading_nothing_new_sends_nothing(daphne, unit_a, api):
    user = unit_a.store
    note = _notify(user, "one")
    client = api(user)
    client.post(f"/api/notifications/{note.id}/read/")

    async def scenario():
        tab = await connect(daphne, token=unit_a.token(user))
        await recv_json(tab)
        await asyncio.to_thread(client.post, f"/api/notifications/{note.id}/read/")  # already read
        await asyncio.to_thread(client.post, "/api/notifications/read-all/")  # nothing unread
        fresh = await asyncio.to_thread(_notify, user, "two")
        await asyncio.to_thread(client.post, "/api/notifications/read-all/")  # control: one unread
        frames = []
        try:
            while True:
                frames.append(await recv_json(tab, 1.5))
        except TimeoutError:
            pass
        await tab.close()
        return fresh, frames

    fresh, frames = asyncio.run(scenario())
    assert [f["type"] for f in frames] == ["notification", "notification_read"]
    assert frames[0]["notification"]["id"] == str(fresh.id)


def test_a_moved_user_hears_nothing_of_the_old_units_jobs(daphne, unit_a, unit_b):
    # given a user of unit A with a running job of A (its progress, its refusals: A's business)
    user = unit_a.requester
    old = _job(user, JobStatus.RUNNING, done=1)
    # when the user is moved to unit B (and starts a job there), then resumes B's stream
    User.objects.filter(id=user.id).update(unit=unit_b.unit)
    user.refresh_from_db()
    new = _job(user, JobStatus.QUEUED)
    _, frames = asyncio.run(_frames_after_greeting(daphne, access_token(user), last_seq=0))

    # then only B's job is owed, as GET /api/jobs/ shows only B's (A's is a 404 there)
    assert [f["job"]["id"] for f in frames if f["type"] == "job_update"] == [str(new.id)]

    # and live: A's job moving on reaches none of the user's B sockets; B's job does
    async def live() -> list[str]:
        ws = await connect(daphne, token=access_token(user))
        await recv_json(ws, 10)
        await asyncio.to_thread(job_push, old)
        await asyncio.to_thread(job_push, new)
        heard: list[str] = []
        while str(new.id) not in heard:  # (pushed after A's: once it is here, A's would be too)
            message = await recv_json(ws, 10)
            if message["type"] == "job_update":
                heard.append(message["job"]["id"])
        await ws.close()
        return heard

    assert asyncio.run(live()) == [str(new.id)]
