"""What one open WebSocket keeps alive in a Daphne process, beyond its socket: every task,
coroutine and scope copy is memory per connection and objects the garbage collector walks on every
full pass (docs/performance.md, "Memory per idle connection"). In-process unit tests of the ASGI
layers; what they add up to is measured by `make bench`."""

from __future__ import annotations

import asyncio
import json

import pytest

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

    outer_scope = {"type": "websocket", "query_string": b"batch=1&last_seq=12", "headers": []}
    task = asyncio.ensure_future(WebSocketAuthMiddleware(inner)(outer_scope, None, None))
    await asyncio.sleep(0.01)

    # then the connection's chain is the middleware, then the application: no second frame from
    # Channels' BaseMiddleware, and the application got the middleware's one copy of the scope
    chain = coroutine_chain(task)
    assert chain[:2] == ["__call__", "inner"], chain
    assert scopes[0] is not outer_scope and scopes[0]["auth_error"] == "credentials_missing"
    # and the middleware's frame, alive as long as the connection, keeps nothing else (the parsed
    # query string was ~540 bytes per connection)
    assert set(task.get_coro().cr_frame.f_locals) <= {"self", "scope", "receive", "send"}
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


# --- the application's receive queue (realtime/daphne.py `Inbox`) -----------------------------------


async def bytes_kept_per_queue(queue_class, count: int = 300) -> float:
    """What a connection's receive queue keeps allocated once its application has read the
    websocket.connect message and waits for the next one (tracemalloc, bytes per queue)."""
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        queues = []
        for _ in range(count):
            queue = queue_class()
            queue.put_nowait({"type": "websocket.connect"})
            await queue.get()
            queues.append(queue)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    return sum(stat.size_diff for stat in after.compare_to(before, "filename")) / count


async def test_an_idle_connections_receive_queue_costs_a_few_dozen_bytes():
    from realtime.patches.daphne import Inbox

    inbox, stock = await bytes_kept_per_queue(Inbox), await bytes_kept_per_queue(asyncio.Queue)
    # asyncio.Queue keeps three deques and an Event with a fourth: ~3.2 KB per idle connection, for
    # the one reader an ASGI application is; the inbox keeps its messages only while they wait
    assert stock > 3000 and inbox < 100, (inbox, stock)


async def test_the_inbox_hands_over_every_message_in_order_to_a_waiting_or_late_reader():
    from realtime.patches.daphne import Inbox

    inbox = Inbox()
    # a reader waiting before anything arrived is woken by the first message
    reader = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait(1)
    assert await reader == 1
    # messages that arrive while nobody reads wait, in order
    for n in (2, 3, 4):
        inbox.put_nowait(n)
    assert [await inbox.get() for _ in range(3)] == [2, 3, 4]


async def test_a_cancelled_read_loses_no_message():
    from realtime.patches.daphne import Inbox

    # given a reader that is woken and cancelled in the same turn of the loop (the message was
    # handed over, the reader never ran): asyncio.Queue keeps the message for the next get
    inbox = Inbox()
    reader = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("connect")
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    assert reader.cancelled()
    # then the next read still gets it
    assert await asyncio.wait_for(inbox.get(), 1) == "connect"


async def test_a_second_concurrent_reader_is_refused_not_left_waiting_forever():
    from realtime.patches.daphne import Inbox

    inbox = Inbox()
    first = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    try:
        with pytest.raises(RuntimeError, match="one reader"):
            await inbox.get()
    finally:
        first.cancel()


async def test_daphne_gives_websocket_applications_an_inbox_and_http_requests_asyncios_queue():
    from daphne.server import Server

    from realtime.patches.daphne import Inbox, create_application

    scopes = []

    async def app(scope, receive, send):
        scopes.append((scope["type"], receive))

    server = Server.__new__(Server)
    server.application, server.connections = app, {}
    for kind in ("websocket", "http"):
        protocol = object()
        server.connections[protocol] = {}
        queue = create_application(server, protocol, {"type": kind})
        await server.connections[protocol]["application_instance"]
        assert scopes[-1] == (kind, queue.get)
        assert isinstance(queue, Inbox) == (kind == "websocket") and bool(queue)


# --- the WebSocket protocol's options (realtime/daphne.py `ClosingWebSocketFactory`) ----------------


def connected_protocol(factory):
    from twisted.internet.testing import StringTransport

    protocol = factory.buildProtocol(None)
    protocol.makeConnection(StringTransport())
    return protocol


def test_a_connection_reads_its_options_from_its_factory_without_a_copy_of_its_own():
    from autobahn.websocket.protocol import WebSocketServerProtocol

    from realtime.patches.autobahn import ClosingWebSocketFactory

    # given Daphne's factory, with the options Daphne sets from its command line after creating it
    factory = ClosingWebSocketFactory(object, server="daphne")
    factory.setProtocolOptions(autoPingInterval=20, autoPingTimeout=30, maxMessagePayloadSize=65536)
    protocol = connected_protocol(factory)

    # then the connection sees them all, and ours (failByDrop off)
    assert (protocol.autoPingInterval, protocol.autoPingTimeout, protocol.maxMessagePayloadSize) == (20, 30, 65536)
    assert protocol.failByDrop is False
    # a function among them is the factory's own, not a method of the connection
    accept = lambda offers: None  # noqa: E731
    factory.setProtocolOptions(perMessageCompressionAccept=accept)
    assert connected_protocol(factory).perMessageCompressionAccept is accept
    assert all(getattr(protocol, name) == getattr(factory, name) for name in WebSocketServerProtocol.CONFIG_ATTRS)
    # without autobahn's per-connection copy of all 29 (they pushed every connection's attribute
    # table from 128 to 256 slots: ~1.7 KB per connection)
    assert not set(WebSocketServerProtocol.CONFIG_ATTRS) & set(vars(protocol))


def test_two_factories_keep_their_own_options():
    from realtime.patches.autobahn import ClosingWebSocketFactory

    first, second = ClosingWebSocketFactory(object), ClosingWebSocketFactory(object)
    first.setProtocolOptions(autoPingInterval=5)
    second.setProtocolOptions(autoPingInterval=50)
    assert connected_protocol(first).autoPingInterval == 5
    assert connected_protocol(second).autoPingInterval == 50
    second.resetProtocolOptions()
    assert connected_protocol(second).autoPingInterval == 0 and connected_protocol(first).autoPingInterval == 5


# --- the database on the way in -------------------------------------------------------------------


@pytest.fixture
def trips(monkeypatch) -> list[str]:
    """The realtime tier's trips to the database pool, by function name, with a hub of the test's
    own event loop."""
    from channels.db import DatabaseSyncToAsync

    from realtime import consumers
    from realtime.hub import Hub

    names: list[str] = []
    original = DatabaseSyncToAsync.__call__

    async def counted(self, *args, **kwargs):
        names.append(self.func.__name__)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(DatabaseSyncToAsync, "__call__", counted)
    monkeypatch.setattr(consumers, "hub", Hub())
    return names


@pytest.mark.django_db(transaction=True)
async def test_opening_a_connection_takes_two_trips_to_the_database_pool(unit_a, trips):
    """Each trip is a pooled connection's checkout, its health check (a round trip of its own) and
    its return: the user behind the token, then the greeting's unit seq and unread notifications."""
    from channels.testing import WebsocketCommunicator

    token = await asyncio.to_thread(unit_a.token, unit_a.store)

    def client():
        return WebsocketCommunicator(WebSocketAuthMiddleware(UpdatesConsumer.as_asgi()), f"/ws/updates/?token={token}")

    # given a process whose hub already follows the unit (its first connection made the hub read
    # the unit's seq once)
    first = client()
    await first.connect()
    await first.receive_json_from(timeout=10)
    trips.clear()
    # when another connection of the unit opens
    second = client()
    connected, _ = await second.connect()
    hello = await second.receive_json_from(timeout=10)
    for ws in (first, second):
        await ws.disconnect()

    # then it was greeted after two trips: the user, then the greeting's reads in one
    assert connected and hello["type"] == "connection_established" and hello["unread_notifications"] == 0
    assert trips == ["user_for_socket", "_greeting_state"], trips


@pytest.mark.django_db(transaction=True)
async def test_a_flood_of_mine_subscribes_reads_the_users_requests_once(unit_a, trips):
    """`subscribe {"mine": true}` reads four tables: a client repeating it (or alternating it with
    unsubscribe) costs the database one resolution per WS_MINE_REFRESH_SECONDS, not one per message."""
    from channels.testing import WebsocketCommunicator

    token = await asyncio.to_thread(unit_a.token, unit_a.requester)
    ws = WebsocketCommunicator(WebSocketAuthMiddleware(UpdatesConsumer.as_asgi()), f"/ws/updates/?token={token}")
    await ws.connect()
    await ws.receive_json_from(timeout=10)

    # when the client asks for `mine` 30 times, every other time unsubscribing in between
    for n in range(30):
        await ws.send_json_to({"type": "subscribe", "mine": True} if n % 2 == 0 else {"type": "unsubscribe"})
    await ws.send_json_to({"type": "ping", "timestamp": "t"})
    assert (await ws.receive_json_from(timeout=10))["type"] == "pong"  # (every message before it was handled)
    await ws.disconnect()

    # then the user's requests were read once (the positive control: once, not never)
    assert trips.count("mine_request_ids") == 1, trips
