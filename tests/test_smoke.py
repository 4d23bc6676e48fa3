"""The path every user takes, end to end on real processes: sign in over HTTP, open the WebSocket,
approve a request (a Celery job), and see the committed change arrive with the next seq."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from backend.accounts.models import Role
from backend.records.models import CrateStatus, RequestStatus, WithdrawalRequest
from tests.support.factories import PASSWORD, CrateFactory, UnitFactory, UserFactory, make_request
from tests.support.signing import signed
from tests.support.ws import connect, recv_json, recv_until

pytestmark = [pytest.mark.smoke, pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_approval_reaches_a_connected_client_after_commit(daphne, worker):
    # given a unit with a pending withdrawal request and its approver
    unit = UnitFactory(code="smoke")
    requester = UserFactory(unit=unit, role=Role.REQUESTER)
    approver = UserFactory(unit=unit, role=Role.APPROVER)
    crates = [CrateFactory(unit=unit), CrateFactory(unit=unit)]
    request = make_request("withdrawal", requester, crates)
    base = f"http://127.0.0.1:{daphne}"

    async def scenario():
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            # when the approver signs in and connects
            tokens = (await http.post("/api/auth/token/", json={"username": approver.username, "password": PASSWORD})).json()
            auth = {"Authorization": f"Bearer {tokens['access']}"}
            ws = await connect(daphne, token=tokens["access"])
            hello = await recv_json(ws)
            # and approves over the API
            answer = await http.post(f"/api/withdrawal-requests/{request.id}/approve/", headers=auth, json=signed("approve"))
            updates = [await recv_until(ws, "data_update", timeout=15) for _ in range(3)]
            job = (await http.get(answer.headers["Location"], headers=auth)).json()
            await ws.close()
            return hello, answer, updates, job

    hello, answer, updates, job = asyncio.run(scenario())

    # then the client saw the unit's seq, the job was accepted and succeeded,
    assert hello["type"] == "connection_established" and hello["unit_id"] == str(unit.id)
    assert answer.status_code == 202 and answer.headers["Location"] == f"/api/jobs/{answer.json()['job']['id']}/"
    assert job["status"] == "succeeded"
    # and the request and both crates arrived as consecutive seqs right after the greeting
    assert [u["seq"] for u in updates] == [hello["seq"] + 1, hello["seq"] + 2, hello["seq"] + 3]
    assert updates[0]["entity"] == "withdrawal" and updates[0]["data"]["status"] == "approved"
    assert {u["data"]["id"] for u in updates[1:]} == {str(c.id) for c in crates}
    assert WithdrawalRequest.objects.get(id=request.id).status == RequestStatus.APPROVED
    assert all(c.status == CrateStatus.WITHDRAWN for c in type(crates[0]).objects.filter(unit=unit))
