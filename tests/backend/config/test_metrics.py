"""/metrics: protected, and describing the whole deployment (database + every Daphne's snapshot)."""

from __future__ import annotations

import asyncio
import time

import pytest
from django.test import override_settings

from backend.accounts.models import Role
from backend.records import services
from tests.support.auth import access_token
from tests.support.factories import UnitFactory, UserFactory
from tests.support.ws import connect, recv_json


@pytest.mark.django_db
def test_metrics_need_the_token(client):
    with override_settings(METRICS_TOKEN="s3cret"):
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200
    with override_settings(METRICS_TOKEN="", DEBUG=False):
        assert client.get("/metrics").status_code == 401


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_metrics_report_jobs_outbox_and_live_connections(client, daphne):
    # given a unit with one committed change and one client connected to the live Daphne
    unit = UnitFactory()
    store = UserFactory(unit=unit, role=Role.STORE)
    services.crate_create(actor=store, location="A1")

    async def hold_connection():
        ws = await connect(daphne, token=access_token(store))
        await recv_json(ws)
        await asyncio.sleep(2.5)  # the hub reports every REALTIME_REPORT_SECONDS (1 s here)
        body = await asyncio.to_thread(_scrape, client)
        await ws.close()
        return body

    # when the operator scrapes /metrics
    body = asyncio.run(hold_connection())

    # then the numbers are there, computed across processes
    assert "records_events_written_total 1.0" in body
    assert "records_events_published_total 1.0" in body
    assert "records_outbox_backlog 0.0" in body
    connections = [line for line in body.splitlines() if line.startswith("records_ws_connections{")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in connections) >= 1


def _scrape(client) -> str:
    from django.db import connection

    try:
        with override_settings(METRICS_TOKEN="t"):
            deadline = time.monotonic() + 10
            while True:
                body = client.get("/metrics", HTTP_AUTHORIZATION="Bearer t").content.decode()
                if "records_ws_connections{" in body or time.monotonic() > deadline:
                    return body
                time.sleep(0.5)
    finally:
        connection.close()
