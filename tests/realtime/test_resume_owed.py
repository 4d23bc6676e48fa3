"""What a reconnecting client is owed (docs/realtime.md, "Resuming"): the state of its user's queued and
running jobs, the unread notifications created since its `last_seq`, and read state across tabs as
live `notification_read` frames. On a real Daphne."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import jsonschema
import pytest
from django.db import transaction
from django.utils import timezone

from backend.events.models import OutboxEvent
from backend.events.schema import SCHEMAS
from backend.jobs.models import Job, JobStatus
from backend.notifications.models import Notification
from backend.notifications.services import Draft, notify
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
    _notify(user, "before", created_at=seen_at - timedelta(minutes=1))
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
