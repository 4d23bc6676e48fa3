"""Notifications live, on a real Daphne and a real Celery worker: a job's `job_finished` arrives as
a `notification` frame on its requester's socket (and on nobody else's), and a client that
reconnects finds the unread count in its greeting."""

from __future__ import annotations

import asyncio

import httpx
import jsonschema
import pytest

from backend.events.schema import SCHEMAS
from backend.notifications.models import Notification
from tests.support.pipeline import wait_until
from tests.support.ws import connect, recv_json, recv_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _valid(message: dict) -> dict:
    jsonschema.validate(message, SCHEMAS[message["type"]], cls=jsonschema.Draft202012Validator)
    return message


def _notify_in_own_connection(user):
    from django.db import connection, transaction

    from backend.notifications.services import Draft, notify

    try:
        with transaction.atomic():
            return notify([Draft(user_id=user.id, kind="job_finished", title="own", body="", link_entity="job",
                                 link_id=user.id)])[0]
    finally:
        connection.close()


def test_a_finished_job_arrives_as_a_notification_and_a_reconnect_gets_the_unread_count(daphne, worker, unit_a, unit_b):
    store, crates = unit_a.store, unit_a.crates
    http = httpx.Client(
        base_url=f"http://127.0.0.1:{daphne}", headers={"Authorization": f"Bearer {unit_a.token(store)}"}, timeout=15,
    )

    def relocate(crate, location: str) -> str:
        answer = http.post(f"/api/crates/{crate.id}/relocate/", json={"location": location})
        assert answer.status_code == 202, answer.text
        return answer.json()["job"]["id"]

    async def scenario():
        mine = await connect(daphne, token=unit_a.token(store))
        colleague = await connect(daphne, token=unit_a.token(unit_a.approver))
        stranger = await connect(daphne, token=unit_b.token(unit_b.store))
        greetings = [_valid(await recv_json(ws)) for ws in (mine, colleague, stranger)]
        # when the store user relocates a crate over HTTP and the worker runs the job
        job_id = await asyncio.to_thread(relocate, crates[0], "Bay 7")
        frame = _valid(await recv_until(mine, "notification", timeout=20))
        # the others hear the unit's update (the colleague) or nothing (the stranger), no notification
        heard = {"colleague": [], "stranger": []}
        for name, ws in (("colleague", colleague), ("stranger", stranger)):
            try:
                while True:
                    heard[name].append(await recv_json(ws, timeout=1.5))
            except TimeoutError:
                pass
        # (positive control: the stranger's socket does get a notification of its own)
        own = await asyncio.to_thread(_notify_in_own_connection, unit_b.store)
        stranger_own = await recv_until(stranger, "notification", timeout=5)
        for ws in (mine, colleague, stranger):
            await ws.close()
        return greetings, job_id, frame, heard, own, stranger_own

    greetings, job_id, frame, heard, own, stranger_own = asyncio.run(scenario())
    others = heard["colleague"] + heard["stranger"]

    # then the greeting counted nothing, and the frame is the job's notification, as stored
    assert [g["unread_notifications"] for g in greetings] == [0, 0, 0]
    notification = frame["notification"]
    row = Notification.objects.get(user=store)
    assert notification["id"] == str(row.id) and notification["kind"] == "job_finished" and notification["read"] is False
    assert notification["link"] == {"entity": "job", "id": job_id}
    assert "notification" not in {m["type"] for m in others}
    # the colleague's socket was live meanwhile (it heard the unit's update), and the stranger's too
    assert [(m["type"], m["data"]["id"]) for m in heard["colleague"]] == [("data_update", str(crates[0].id))]
    assert heard["stranger"] == []
    assert stranger_own["notification"]["id"] == str(own.id)

    # while disconnected, a second job ends: the reconnecting client's greeting counts both
    second = relocate(crates[1], "Bay 8")
    wait_until(lambda: Notification.objects.filter(user=store, link_id=second).exists(), 20, what="the second job")

    async def greeting() -> dict:
        ws = await connect(daphne, token=unit_a.token(store))
        hello = _valid(await recv_json(ws))
        await ws.close()
        return hello

    assert asyncio.run(greeting())["unread_notifications"] == 2
    listed = http.get("/api/notifications/?unread=1").json()
    assert [n["link"]["id"] for n in listed["results"]] == [second, job_id]
    assert http.post(f"/api/notifications/{notification['id']}/read/").status_code == 200
    assert asyncio.run(greeting())["unread_notifications"] == 1
    http.close()
