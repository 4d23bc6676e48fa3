"""`/ws/updates/`: authenticate, join the unit (through the process hub), resume, then stay live.

The consumer owns the connection's protocol: auth and close codes, the resume handshake (replay from
the outbox, then live, de-duplicated by seq), client messages and the live rules (4002 / 4003).
It never changes domain state and never blocks the event loop: database reads go through
selectors run on a thread pool (realtime/db.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from urllib.parse import parse_qs

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import Error as DatabaseError
from django.utils import timezone
from redis.exceptions import RedisError

from backend.common.faults import afault_point
from backend.events import groups, schema

from . import connections, credentials, resuming, selectors, subscriptions
from .frames import FrameWriter, Outgoing, release_handshake_state
from .hub import hub
from .presence import ConnectionPresence, parse_target, presence, presence_frame, profile_json

logger = logging.getLogger(__name__)

# Close codes: 4001-4003 are the public contract's; 4008 and the standard 1011/1013 are ours, all
# documented in docs/realtime.md.
CLOSE_AUTH_FAILED = 4001
CLOSE_TOKEN_EXPIRED = 4002
CLOSE_ACCESS_REVOKED = 4003
CLOSE_TOO_SLOW = 4008
CLOSE_TOO_MANY_CONNECTIONS = 4029  # the user already holds WS_MAX_CONNECTIONS_PER_USER sockets
CLOSE_SERVER_ERROR = 1011  # a bug: the server could not serve this connection
CLOSE_TRY_AGAIN_LATER = 1013  # Redis or the database was unavailable while joining: reconnect

# Errors that mean "a backing service is briefly away", not "a bug".
TRANSIENT_ERRORS = (RedisError, DatabaseError, OSError, asyncio.TimeoutError)
# A client's `type` is echoed in an error only when it looks like a message type.
_PRINTABLE_TYPE = re.compile(r"^[A-Za-z0-9_.:-]{1,40}$")

MAX_CLIENT_MESSAGE_BYTES = 4096
# Replayed events read and written at a time; between pages the replay waits for a client that is
# not keeping up (so a large gap never sits in memory for a client that does not read).
REPLAY_PAGE = 500
BATCH_MAX_ITEMS = 500
# Outgoing frames must stay under Daphne's --websocket-max-message-size (65536), which autobahn
# enforces on sends too: a batch is split before it would cross this many bytes.
BATCH_MAX_BYTES = 60_000


class _SlowReaderGuard:
    """A Twisted push producer registered on the connection's transport: Twisted pauses it when
    the client stops reading and the send buffer fills up, and resumes it once it drains. A
    connection that stays paused REALTIME_SLOW_CLIENT_SECONDS, or for which more than
    REALTIME_CLIENT_BUFFER_BYTES are written while paused (FrameWriter counts), is closed with 4008;
    its next resume with last_seq fills whatever it missed."""

    def __init__(self, consumer: UpdatesConsumer) -> None:
        self.consumer = consumer
        self.timer: asyncio.TimerHandle | None = None

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's interface
        self.consumer.writer.pause()
        if self.timer is None:
            self.timer = asyncio.get_event_loop().call_later(
                settings.REALTIME_SLOW_CLIENT_SECONDS, self.consumer.too_slow
            )

    def resumeProducing(self) -> None:  # noqa: N802
        self.consumer.writer.resume()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def stopProducing(self) -> None:  # noqa: N802
        self.resumeProducing()


class UpdatesConsumer(AsyncWebsocketConsumer):
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
    joined = False
    claimed: str | None = None  # this connection's slot among its user's (realtime/connections.py)
    closing = False
    released = False
    expiry_handle: asyncio.TimerHandle | None = None
    flush_handle: asyncio.TimerHandle | None = None
    # Selective updates (realtime/subscriptions.py): None is the whole unit.
    filter: subscriptions.Filter | None = None
    # The last `mine` resolution (ids, monotonic time): reused for WS_MINE_REFRESH_SECONDS.
    mine_resolved: tuple[set[str], float] | None = None
    activity = False  # `activity=1`: the activity feed's frames too
    # Presence (`presence=1`, realtime/presence.py): this connection's state, and the snapshot's
    # version (None until the snapshot is sent; deltas wait in presence_buffer meanwhile).
    presence: ConnectionPresence | None = None
    presence_joined = False
    presence_floor: int | None = None
    presence_buffer: list | None = None
    presence_start = 0  # the unit's presence version just before this connection went online
    # Notifications (backend.notifications): frames that arrive before the greeting wait here; the
    # ids the greeting's `unread_notifications` already counts are never sent as frames too.
    notifications_buffer: list | None = None
    notifications_counted: frozenset = frozenset()
    # (reason, seq, epoch) of a new epoch announced while this connection was still replaying.
    resync_pending: tuple | None = None

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

        self.writer = FrameWriter(self.base_send, settings.REALTIME_CLIENT_BUFFER_BYTES, self.too_slow)
        self.sent_seq = 0
        self.buffer: list[Outgoing] | None = []  # events that arrive while we replay
        self.pending: list[Outgoing] = []  # batch mode: waiting for the next flush
        self._guard_transport()
        release_handshake_state(self.writer.protocol)
        # The scope's header list is one list shared by every middleware's copy of the scope (and
        # Daphne's protocol); nothing reads it after the handshake, so it is emptied in place.
        self.scope["headers"][:] = []

        self.tokens, self.refilled_at, self.limited_at = float(settings.WS_CLIENT_MESSAGES_BURST), time.monotonic(), 0.0

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

    async def _presence_guarded(self, step) -> None:
        try:
            await step
        except TRANSIENT_ERRORS:
            # Presence is advisory: without Redis the connection still serves its updates.
            logger.warning("presence unavailable for a websocket of user %s", self.user_id, exc_info=True)
            self.presence, self.presence_buffer = None, None
            await presence.leave(self)

    async def _resolve_filter(self, spec: subscriptions.FilterSpec) -> subscriptions.Filter:
        mine_ids = None
        if spec.mine:
            # Resolving `mine` reads four tables: at most once per WS_MINE_REFRESH_SECONDS per
            # connection, however many subscribes ask (the ids grow live in between).
            now = time.monotonic()
            if self.mine_resolved is None or now - self.mine_resolved[1] >= settings.WS_MINE_REFRESH_SECONDS:
                found = await selectors.mine_request_ids(self.user_id, self.unit_id, subscriptions.MAX_MINE_IDS)
                self.mine_resolved = (found, now)
            mine_ids = set(self.mine_resolved[0])
        return subscriptions.Filter(spec.entities, spec.ids, spec.mine, self.identity.username, mine_ids)

    async def _presence_online(self, slot: str) -> None:
        """This connection online (its user `joined` when it is their first), deltas from now on
        held until the snapshot is sent (`presence_floor`: those at or below it are dropped)."""
        profile = await selectors.presence_profile(self.user_id)
        if profile is None or self.closing:
            return
        self.presence_buffer = []
        self.presence_joined = True
        self.presence = ConnectionPresence(self.unit_id, self.user_id, slot, profile_json(*profile))
        self.presence_start = await presence.join(self)

    async def _presence_snapshot(self) -> None:
        """The unit's online users (every connection greeted before this one read it), then the deltas."""
        users = await presence.snapshot_for(self)
        self.writer.write(presence_frame(users))
        self.presence_floor = self.presence_start
        buffered, self.presence_buffer = self.presence_buffer, None
        for buffered_version, event in buffered:
            self.presence_deliver(buffered_version, event)
        self.presence.want("", "")

    def presence_deliver(self, version: int, event: Outgoing) -> None:
        """A presence_update (called by the presence hub, encoded and framed once per process)."""
        if self.closing:
            return
        if self.presence_floor is None:
            if self.presence_buffer is not None:
                self.presence_buffer.append((version, event))
            return
        if version > self.presence_floor:
            self.writer.write(event)

    async def _resume(self, requested: str | None, requested_epoch: str | None, current: int, epoch: str) -> None:
        last_seq, reason = resuming.resume_point(requested, requested_epoch, current, epoch)
        if requested is not None and not self.closing:
            # Owed whatever the seqs say: jobs and notifications are the user's, not the stream's.
            await resuming.send_owed(self, last_seq if reason is None else 0)
        if reason is not None:
            return self._resync(reason, current)
        self.sent_seq = last_seq
        while self.sent_seq < current:
            if not await self.writer.drained(settings.REALTIME_SLOW_CLIENT_SECONDS):
                return self.too_slow()
            if self.closing:
                return
            rows = await selectors.outbox_frames(
                self.unit_id, after=self.sent_seq, limit=REPLAY_PAGE, activity=self.activity
            )
            if not rows or rows[0][0] != self.sent_seq + 1:
                return self._resync("history_unavailable", current)
            events = [Outgoing(*row) for row in rows]
            last = events[-1].seq
            if self.filter is not None:
                events = [event for event in events if self.filter.matches(event)]
            if events and self.batch:
                self._write_batch(events)
            else:
                for event in events:
                    self._write(event)
            self.sent_seq = last

    def _resync(self, reason: str, seq: int, epoch: str | None = None) -> None:
        self.send_message(schema.resync_required(reason=reason, seq=seq, epoch=epoch))
        self.sent_seq = seq

    def _guard_transport(self) -> None:
        protocol = self.writer.protocol
        transport = getattr(protocol, "transport", None)
        if transport is None or not hasattr(transport, "registerProducer"):
            return
        guard = _SlowReaderGuard(self)
        try:
            transport.registerProducer(guard, True)
        except RuntimeError:
            # Twisted's HTTPChannel registered itself before Daphne upgraded the connection and is
            # never unregistered; it has nothing left to produce, so the guard takes its place.
            transport.unregisterProducer()
            transport.registerProducer(guard, True)

    # --- delivery (called by the hub, synchronously, in seq order) -----------------------------

    def deliver_all(self, events: tuple[Outgoing, ...]) -> None:
        """The hub's events of one message, in seq order: their frames leave in one write."""
        if len(events) == 1:
            self.deliver(events[0])
            return
        self.writer.cork()
        try:
            for event in events:
                self.deliver(event)
        finally:
            self.writer.uncork()

    def deliver(self, event: Outgoing) -> None:
        if self.buffer is not None:
            self.buffer.append(event)
            return
        if event.seq <= self.sent_seq:
            return
        if event.seq != self.sent_seq + 1:
            # The hub delivers contiguously; a hole here means this connection fell out of step.
            self._flush()
            return self._resync("gap", event.seq - 1) or self.deliver(event)
        self.sent_seq = event.seq
        # A filtered connection skips what does not match (its client sees seq jumps, by design).
        if self.filter is not None and not self.filter.matches(event):
            return
        if self.batch:
            self.pending.append(event)
            if len(self.pending) >= BATCH_MAX_ITEMS:
                self._flush()
            elif self.flush_handle is None:
                self.flush_handle = asyncio.get_running_loop().call_later(
                    settings.REALTIME_BATCH_WINDOW_MS / 1000, self._flush
                )
        else:
            self._write(event)

    def _write(self, event: Outgoing) -> None:
        """One update, then (for the activity feed) its activity frames: same order, same seq."""
        self.writer.write(event)
        if self.activity:
            for frame in event.activity():
                self.writer.write(frame)

    def resync(self, reason: str, seq: int, epoch: str | None = None) -> None:
        if self.buffer is None:
            self._flush()
            self._resync(reason, seq, epoch)
        elif epoch is not None:
            # Mid-replay: what was replayed and buffered counted in the old epoch (connect resyncs).
            self.resync_pending = (reason, seq, epoch)

    def _flush(self) -> None:
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None
        if self.pending:
            pending, self.pending = self.pending, []
            self._write_batch(pending)

    def _write_batch(self, events: list[Outgoing]) -> None:
        """`data_update_batch` frames of at most BATCH_MAX_ITEMS items and BATCH_MAX_BYTES each."""
        frames: list[str] = []
        size = 0
        for event in events:
            if frames and (len(frames) >= BATCH_MAX_ITEMS or size + len(event.text) > BATCH_MAX_BYTES):
                self.writer.write(schema.data_update_batch_frame(frames))
                frames, size = [], 0
            frames.append(event.text)
            size += len(event.text) + 1
        if frames:
            self.writer.write(schema.data_update_batch_frame(frames))
        if self.activity:  # after the batch that holds their updates, in seq order
            for event in events:
                for frame in event.activity():
                    self.writer.write(frame)

    def send_message(self, message: dict) -> None:
        self.writer.write(schema.encode(message))

    def job_frame(self, frame: Outgoing) -> None:
        """A job_update of this connection's user (encoded once by the hub for all of them)."""
        self.writer.write(frame)

    def user_frame(self, frame: Outgoing) -> None:
        """Another frame for this connection's user: `notification_read` (framed once by the hub), or
        an unread notification owed on resume (realtime/resuming.py)."""
        if not self.closing:
            self.writer.write(frame)

    def notification_frame(self, notification_id: str, frame: Outgoing) -> None:
        """A notification of this connection's user: held until the greeting is sent, and never
        sent when the greeting's `unread_notifications` already counted it."""
        if self.notifications_buffer is not None:
            self.notifications_buffer.append((notification_id, frame))
        elif notification_id not in self.notifications_counted and not self.closing:
            self.writer.write(frame)

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

    # --- client messages ----------------------------------------------------------------------

    async def websocket_receive(self, message: dict) -> None:
        if self.identity is None or self.closing:
            return
        if not self._take_token():
            return
        try:
            await afault_point("consumer.receive", user=self.user_id)
            await self.receive(text_data=message.get("text"), bytes_data=message.get("bytes"))
        except Exception:  # noqa: BLE001 - a bug in handling one message must not kill the connection
            logger.exception("handling a client message failed")
            self._error("internal_error", "The server could not handle this message.")

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            return self._error("binary_not_supported", "Only JSON text frames are accepted.")
        # Counted in UTF-8 bytes, as on the wire (a character is 1 to 4 of them).
        if len(text_data) > MAX_CLIENT_MESSAGE_BYTES // 4 and len(text_data.encode()) > MAX_CLIENT_MESSAGE_BYTES:
            return self._error("message_too_large", f"Messages are limited to {MAX_CLIENT_MESSAGE_BYTES} bytes.")
        try:
            message = json.loads(text_data)
        except (ValueError, RecursionError):
            # RecursionError: deep nesting ("[[[[..."), which json raises instead of a ValueError.
            return self._error("malformed_json", "The message is not valid JSON.")
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            return self._error("invalid_message", 'A message is a JSON object with a "type".')
        if message["type"] == "ping":
            return self.send_message(schema.pong(timestamp=timezone.now()))
        if message["type"] in ("subscribe", "unsubscribe"):
            return await self._subscribe(message)
        if message["type"] in ("viewing", "editing", "idle"):
            return self._presence_message(message)
        if message["type"] == "refresh":
            return await self._refresh(message)
        shown = f" {message['type']!r}" if _PRINTABLE_TYPE.match(message["type"]) else ""
        return self._error("unknown_type", f"Unknown message type{shown}.")

    async def _subscribe(self, message: dict) -> None:
        """`subscribe` replaces the filter (any of entities, ids, mine); `unsubscribe` goes back to
        the whole unit. Applies from the next update this connection is handed."""
        if message["type"] == "unsubscribe":
            self.filter = None
            return
        spec = subscriptions.parse_message(message)
        if isinstance(spec, str):
            return self._error("invalid_message", spec)
        self.filter = None if spec.everything else await self._resolve_filter(spec)

    async def _refresh(self, message: dict) -> None:
        """A new access token on the open socket (realtime/credentials.py)."""
        refused = await credentials.refresh(self, message.get("token"))
        if refused is not None:
            await self._close(CLOSE_ACCESS_REVOKED if refused.revoked else CLOSE_AUTH_FAILED)

    def _presence_message(self, message: dict) -> None:
        if self.presence is None:
            return self._error("invalid_message", "Presence messages need presence=1 on the connection.")
        if message["type"] == "idle":
            return self.presence.want("", "")
        target = parse_target(message)
        if isinstance(target, str):
            return self._error("invalid_message", target)
        value = f"{target[0]}:{target[1]}"
        # Editing a record is viewing it too.
        self.presence.want(value, value if message["type"] == "editing" else "")

    def _take_token(self) -> bool:
        """The client-message token bucket: WS_CLIENT_MESSAGES_PER_SECOND, bursts of
        WS_CLIENT_MESSAGES_BURST. A message over it is dropped; the client hears so at most once a
        second (an error per dropped message would only amplify a flood)."""
        now = time.monotonic()
        rate, burst = settings.WS_CLIENT_MESSAGES_PER_SECOND, settings.WS_CLIENT_MESSAGES_BURST
        self.tokens = min(burst, self.tokens + (now - self.refilled_at) * rate)
        self.refilled_at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        if now - self.limited_at >= 1.0:
            self.limited_at = now
            self._error("rate_limited", f"Too many messages: at most {rate:g} a second; this one was dropped.")
        return False

    def _error(self, code: str, text: str) -> None:
        self.send_message(schema.error(code=code, message=text))

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
            except Exception:  # noqa: BLE001 - the slot is pruned with its process's heartbeat anyway
                logger.warning("releasing a connection slot failed", exc_info=True)
