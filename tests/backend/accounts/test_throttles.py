"""Throttles count in Redis (Django's cache framework), so a limit holds across every web process:
a per-process counter would multiply it by the number of processes."""

from __future__ import annotations

import httpx
import pytest

from tests.support.auth import access_token
from tests.support.factories import UserFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_ticket_issuing_is_throttled_across_web_processes(spawn_daphne):
    # given two web processes allowing 4 tickets a minute per user
    _, port_a = spawn_daphne(WS_TICKET_RATE="4/min")
    _, port_b = spawn_daphne(WS_TICKET_RATE="4/min")
    user = UserFactory()
    headers = {"Authorization": f"Bearer {access_token(user)}"}

    # when the user asks for tickets from both in turn
    answers = [
        httpx.post(f"http://127.0.0.1:{port}/api/auth/ws-ticket/", headers=headers, timeout=10)
        for port in (port_a, port_b, port_a, port_b, port_a, port_b)
    ]

    # then the fifth is refused, whichever process answers: the count is shared
    assert [a.status_code for a in answers] == [201, 201, 201, 201, 429, 429]
    assert answers[4].json()["code"] == "throttled" and 0 < int(answers[4].headers["Retry-After"]) <= 60
