"""What one open WebSocket keeps alive in a Daphne process, beyond its socket: every task,
coroutine and scope copy is memory per connection and objects the garbage collector walks on every
full pass (docs/performance.md, "Memory per idle connection"). In-process unit tests of the ASGI
layers; what they add up to is measured by `make bench`."""

from __future__ import annotations

import asyncio
import json

from realtime.auth import WebSocketAuthMiddleware
from realtime.consumers import UpdatesConsumer


def coroutine_chain(task: asyncio.Task) -> list[str]:
    """The names of the coroutines a suspended task is waiting in, outermost first."""
    names, coro = [], task.get_coro()
    while coro is not None and hasattr(coro, "cr_code"):
        names.append(coro.cr_code.co_name)
        coro = coro.cr_await
    return names


async def test_an_idle_connection_waits_for_its_next_message_in_its_own_task_alone():
    # given a consumer that has started and waits for the client's next message
    inbox: asyncio.Queue = asyncio.Queue()
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    before = asyncio.all_tasks()
    app = asyncio.ensure_future(UpdatesConsumer.as_asgi()({"type": "websocket"}, inbox.get, send))
    await asyncio.sleep(0.01)

    # then the only task it has is the application's own (Channels' dispatcher would run every
    # receive as a second task and wait on it with asyncio.wait)
    assert asyncio.all_tasks() - before == {app}
    assert "wait" not in coroutine_chain(app)

    # and a disconnect still ends it cleanly
    await inbox.put({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(app, 1)
    assert app.exception() is None and sent == []


async def test_the_auth_middleware_adds_one_coroutine_and_one_scope_copy_to_a_connection():
    # given the auth middleware in front of an application that waits, as a connection does
    scopes: list[dict] = []
    waiting = asyncio.Event()

    async def inner(scope, receive, send):
        scopes.append(scope)
        await waiting.wait()

    outer_scope = {"type": "websocket", "query_string": b"", "headers": []}
    task = asyncio.ensure_future(WebSocketAuthMiddleware(inner)(outer_scope, None, None))
    await asyncio.sleep(0.01)

    # then the connection's chain is the middleware, then the application: no second frame from
    # Channels' BaseMiddleware, and the application got the middleware's one copy of the scope
    chain = coroutine_chain(task)
    assert chain[:2] == ["__call__", "inner"], chain
    assert scopes[0] is not outer_scope and scopes[0]["auth_error"] == "credentials_missing"
    waiting.set()
    await task


class UserConnection:
    """What the hub calls on a connection for its user's frames."""

    def __init__(self, user_id: str) -> None:
        self.user_id, self.unit_id = user_id, "unit-1"
        self.frames: list = []

    def job_frame(self, frame) -> None:
        self.frames.append(frame)

    def notification_frame(self, notification_id, frame) -> None:
        self.frames.append((notification_id, frame))


async def test_a_users_job_updates_and_notifications_are_encoded_once_for_all_their_connections():
    # given one user with three connections in this process (three tabs, or a shared kiosk user)
    from realtime.hub import Hub

    hub = Hub()
    tabs = [UserConnection("user-1") for _ in range(3)]
    hub.users = {"user-1": set(tabs)}

    # when the worker's job_update and a notification for that user arrive
    await hub._dispatch({"type": "job.update", "user_id": "user-1", "job": {"id": "j1", "status": "running"}})
    note = {"id": "n1", "kind": "request_approved", "title": "t", "body": "b", "link": None,
            "created_at": "2026-01-15T10:30:00Z", "read": False}
    await hub._dispatch({"type": "user.notifications", "user_id": "user-1", "notifications": [note]})

    # then every connection got the very same frames, encoded once (not one JSON encoding and one
    # WebSocket frame per connection, which held the event loop ~0.1 ms per connection)
    first = tabs[0].frames
    assert all(tab.frames[0] is first[0] and tab.frames[1][1] is first[1][1] for tab in tabs)
    assert json.loads(first[0].text) == {"type": "job_update", "job": {"id": "j1", "status": "running"}}
    assert first[1][0] == "n1" and json.loads(first[1][1].text) == {"type": "notification", "notification": note}
