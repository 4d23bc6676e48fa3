"""`/ws/updates/`: authenticate, join the unit (through the process hub), resume, then stay live.

The consumer owns the connection's life: auth and close codes, joining and leaving the hub, the
greeting, and the live rules (4002 / 4003). Its other concerns are mixins, one module each, that add
attributes but no object per connection: the way out (realtime/delivery.py: resume, live delivery,
batches, slow readers), presence (realtime/presence_session.py) and what a client may send
(realtime/client_messages.py).
It never changes domain state and never blocks the event loop: database reads go through
selectors run on a thread pool (realtime/db.py).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from urllib.parse import parse_qs

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from backend.events import groups, schema

from . import connections, credentials, selectors, subscriptions
from .client_messages import ClientMessages
from .closing import (
    CLOSE_ACCESS_REVOKED,
    CLOSE_AUTH_FAILED,
    CLOSE_SERVER_ERROR,
    CLOSE_TOKEN_EXPIRED,
    CLOSE_TOO_MANY_CONNECTIONS,
    CLOSE_TOO_SLOW,
    CLOSE_TRY_AGAIN_LATER,
    TRANSIENT_ERRORS,
)
from .delivery import Delivery
from .frames import FrameWriter
from .hub import hub
from .presence import presence
from .presence_session import Presence

logger = logging.getLogger(__name__)

__all__ = ["UpdatesConsumer", "CLOSE_ACCESS_REVOKED", "CLOSE_AUTH_FAILED", "CLOSE_TOKEN_EXPIRED", "CLOSE_TOO_SLOW"]


class UpdatesConsumer(ClientMessages, Presence, Delivery, AsyncWebsocketConsumer):
    """One WebSocket connection.

    Its lifecycle cannot leak: whatever raises in a handler, `__call__`'s `finally` unregisters the
    connection from the hub (which leaves its groups) and cancels its timers, even when Daphne
    never delivers `websocket.disconnect` because the application instance died. A failing
    connect closes with 1013 (a backing service is away) or 1011 (a bug); a client message the
    consumer cannot handle gets an `error` frame and the connection stays open.
    """

    # No channel-layer channel per connection: the process hub receives for all of them.
    channel_layer_alias = None

    identity = None

    # No channel-layer channel per connection: the process hub receives for all of them.
    channel_layer_alias = None

    identity = None
    joined = False
    claimed: str | None = None  # this connection's slot among its user's (realtime/connections.py)
    closing = False
    released = False
    expiry_handle: asyncio.TimerHandle | None = None

    async def __call__(self, scope, receive, send) -> None:
        """Channels' `AsyncConsumer.__call__` for a consumer without a channel of its own: the
        client's messages, one at a time, straight to `dispatch`. Channels' version hands them to
        `await_many_dispatch`, made for several sources, which runs each receive as a task of its
        own and waits on it with `asyncio.wait`: with the one source, that is a second task, its
        context and a chain of waiters kept alive by every idle connection."""
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            await self._release()

    async def dispatch(self, message: dict) -> None:
        # Channels' dispatch runs close_old_connections() on Django's one thread-sensitive executor
        # for every message, so every client ping would queue behind HTTP views. This consumer
        # never touches the event loop thread's database connection (its reads run on
        # realtime.db's pool, which cleans up around each call), so it dispatches directly.
        handler = getattr(self, message["type"].replace(".", "_"), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- connect ------------------------------------------------------------------------------

    async def websocket_connect(self, message: dict) -> None:
        try:
            await self.connect()
        except Exception as exc:  # noqa: BLE001 - every failure ends in a defined close, never a leak
            transient = isinstance(exc, TRANSIENT_ERRORS)
            code = CLOSE_TRY_AGAIN_LATER if transient else CLOSE_SERVER_ERROR
            logger.warning("websocket connect failed (%s); closing %s", type(exc).__name__, code, exc_info=not transient)
            await self._close(code)
            await self._release()

    async def connect(self) -> None:
        await self.accept()
        identity = self.scope.get("identity")
        if identity is None:
            reason = self.scope.get("auth_error")
            logger.info("websocket auth failed: %s", reason)
            await self._close(CLOSE_TRY_AGAIN_LATER if reason == "unavailable" else CLOSE_AUTH_FAILED)
            return
        self.identity = identity
        self.user_id = identity.user_id
        self.unit_id = identity.unit_id
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        self.batch = (query.get("batch") or ["0"])[0] in ("1", "true")
        requested = (query.get("last_seq") or [None])[0]
        requested_epoch = (query.get("epoch") or [None])[0]
        self.presence_wanted = (query.get("presence") or ["0"])[0] in ("1", "true")
        # The activity feed: each update's audit entries as `activity` frames, right after it.
        self.activity = (query.get("activity") or ["0"])[0] in ("1", "true")
        spec = subscriptions.parse_query(query)

        self._start_delivery()
        # The scope's header list is one list shared by every middleware's copy of the scope (and
        # Daphne's protocol); nothing reads it after the handshake, so it is emptied in place.
        self.scope["headers"][:] = []

        self._start_messages()

        slot = uuid.uuid4().hex[:16]
        if not await connections.claim(self.user_id, slot):
            logger.info("websocket of user %s refused: too many connections", self.user_id)
            await self._close(CLOSE_TOO_MANY_CONNECTIONS)
            return
        self.claimed = slot
        # A filter in the URL (a resume) applies from the replay on: set before joining the hub.
        if isinstance(spec, subscriptions.FilterSpec) and not spec.everything:
            self.filter = await self._resolve_filter(spec)
        # Marked before the await: a join that fails half-way is undone by _release().
        self.joined = True
        self.notifications_buffer = []
        await hub.join(self)
        if self.presence_wanted:
            # Online before the greeting: any snapshot read after this connection was greeted lists it.
            await self._presence_guarded(self._presence_online(slot))
        current, unread, counted, epoch = await selectors.greeting_state(self.unit_id, self.user_id)
        self.notifications_counted = frozenset(counted)
        self.send_message(
            schema.connection_established(unit_id=self.unit_id, seq=current, unread_notifications=unread,
                                          expires_at=identity.expires_at, epoch=epoch)
        )
        buffered_notifications, self.notifications_buffer = self.notifications_buffer, None
        for notification_id, frame in buffered_notifications:
            self.notification_frame(notification_id, frame)
        if isinstance(spec, str):
            self._error("invalid_message", f"The filter in the URL was ignored: {spec}")
        await self._resume(requested, requested_epoch, current, epoch)
        if self.resync_pending is not None:  # the stream got a new epoch during the replay
            self.buffer = []
            self._resync(*self.resync_pending)
        # Live from here: whatever arrived during the replay, minus what the replay covered.
        buffered, self.buffer = self.buffer, None
        for event in buffered:
            self.deliver(event)
        credentials.schedule_expiry(self)
        if self.presence is not None and not self.closing:
            await self._presence_guarded(self._presence_snapshot())

    async def user_message(self, message: dict) -> None:
        if message["type"] == groups.USER_CLOSE:
            await self._close(message.get("code", CLOSE_ACCESS_REVOKED))

    def broken(self) -> None:
        """Delivery to this connection failed: close it (1011); its resume fills the gap."""
        asyncio.ensure_future(self._close(1011))

    def too_slow(self) -> None:
        if self.closing:
            return
        logger.warning("closing a websocket of user %s: client too slow", getattr(self, "user_id", "?"))
        asyncio.ensure_future(self._close(CLOSE_TOO_SLOW))

    def _token_expired(self) -> None:
        asyncio.ensure_future(self._close(CLOSE_TOKEN_EXPIRED))

    def is_open(self) -> bool:
        """Whether frames can still reach the client (the hub reaps connections that cannot)."""
        if self.closing:
            return False
        protocol = getattr(getattr(self, "writer", None), "protocol", None)
        return protocol is None or protocol.state == protocol.STATE_OPEN

    async def _close(self, code: int) -> None:
        if self.closing:
            return
        self.closing = True
        if code != 1000:
            hub.closed_with(code)  # records_ws_error_closes_total{code}
        writer = getattr(self, "writer", None)
        if writer is not None:
            self._flush()
        try:
            # Standard codes (1011, 1013) go straight to the protocol, even before the writer exists.
            if code >= 3000 or not (writer or FrameWriter(self.base_send)).close_standard(code):
                await self.close(code=code)
        except Exception:  # noqa: BLE001 - the transport is already gone; nothing left to tell
            logger.debug("close(%s) failed: connection already gone", code, exc_info=True)

    # --- disconnect ---------------------------------------------------------------------------

    async def websocket_disconnect(self, message: dict) -> None:
        await self._release()
        raise StopConsumer()

    async def _release(self) -> None:
        """Stop timers and leave the hub (and with it the groups). Idempotent; never raises."""
        if self.released:
            return
        self.released = True
        self.closing = True
        for handle in (self.expiry_handle, self.flush_handle):
            if handle is not None:
                handle.cancel()
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.on_overflow = None  # (a cycle with this consumer: freed as it closes, not by a collection)
        if self.presence_joined:
            self.presence_joined = False
            try:
                await presence.leave(self)
                if self.presence is not None:
                    await self.presence.close()
            except Exception:  # noqa: BLE001 - the presence sweep removes what is left
                logger.warning("leaving presence failed", exc_info=True)
        if self.joined:
            self.joined = False
            try:
                await hub.leave(self)
            except Exception:  # noqa: BLE001 - hub.leave forgets the connection before any I/O
                logger.warning("leaving the hub failed", exc_info=True)
        if self.claimed is not None:
            slot, self.claimed = self.claimed, None
            try:
                await connections.release(self.user_id, slot)
            except Exception:  # noqa: BLE001 - retried at the next heartbeat (connections.release)
                logger.warning("releasing a connection slot failed; retried at the next heartbeat", exc_info=True)
