"""Credentials never reach a log line: a Daphne process's whole output, after WebSocket handshakes
and plain HTTP requests that carry tokens and tickets in their query strings, good and bad."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from backend.accounts.tickets import ticket_issue
from backend.accounts.tokens import password_stamp
from tests.support.realtime import failed_connection
from tests.support.ws import connect, recv_json

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("verbosity", ["1", "2"], ids=["-v1 (Procfile)", "-v2 (debug)"])
def test_tokens_and_tickets_never_appear_in_the_daphne_log(spawn_daphne, unit_a, verbosity):
    # given a Daphne at the verbosity of production (access log on) or of debugging (Twisted too)
    proc, port = spawn_daphne(extra=["-v", verbosity])
    user = unit_a.approver
    good_token = unit_a.token(user)
    bad_token = good_token[:-6] + "AAAAAA"
    good_ticket = ticket_issue(
        user_id=str(user.id), access_exp=2_000_000_000, stamp=password_stamp(user), unit_id=str(user.unit_id)
    )
    bad_ticket = "unknownTicket0123456789abcdefghijklmnopqrstuv"

    async def scenario():
        # when clients connect with each of them
        for query in ({"token": good_token}, {"ticket": good_ticket}):
            ws = await connect(port, **query)
            assert (await recv_json(ws))["type"] == "connection_established"
            await ws.close()
        for query in ({"token": bad_token}, {"ticket": bad_ticket}, {"ticket": good_ticket}):
            assert await failed_connection(port, **query) == ([], 4001)
        # and plain HTTP requests carry them in their query strings and headers
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            await http.get(f"/ws/updates/?token={good_token}&ticket={bad_ticket}")
            await http.get(f"/api/me/?token={bad_token}&access={good_token}")
            await http.get("/api/me/", headers={"Authorization": f"Bearer {bad_token}"})
            me = await http.get("/api/me/", headers={"Authorization": f"Bearer {good_token}"})
            assert me.status_code == 200

    asyncio.run(scenario())
    proc.stop()
    output = proc.log_path.read_text()

    # then the requests were logged, and not one credential with them
    assert "WSCONNECT /ws/updates/" in output and "/api/me/?token=[redacted]&access=[redacted]" in output
    leaked = [name for name, secret in [
        ("good token", good_token), ("bad token", bad_token), ("good ticket", good_ticket), ("bad ticket", bad_ticket),
        ("token signature", good_token.rsplit(".", 1)[1]),
    ] if secret in output]
    assert leaked == []
