"""The consumer's way out: the resume replay, live delivery in seq order (de-duplicated, gap
checked, filtered), batch mode, the user's own frames (jobs, notifications), and the guard that
closes a connection whose client stopped reading (4008).

A mixin of `UpdatesConsumer` (realtime/consumers.py): it adds no object per connection, only the
attributes below, and calls the consumer's `too_slow`.
"""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings

from backend.events import schema

from . import resuming, selectors, subscriptions
from .frames import FrameWriter, Outgoing, release_handshake_state

logger = logging.getLogger(__name__)

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

    def __init__(self, consumer: Delivery) -> None:
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



class Delivery:
    """Resume, then live: what the hub hands a connection, written to its client."""

    flush_handle: asyncio.TimerHandle | None = None
    # Selective updates (realtime/subscriptions.py): None is the whole unit.
    filter: subscriptions.Filter | None = None
    activity = False  # `activity=1`: the activity feed's frames too
    # Notifications (backend.notifications): frames that arrive before the greeting wait here; the
    # ids the greeting's `unread_notifications` already counts are never sent as frames too.
    notifications_buffer: list | None = None
    notifications_counted: frozenset = frozenset()
    # (reason, seq, epoch) of a new epoch announced while this connection was still replaying.
    resync_pending: tuple | None = None

    def _start_delivery(self) -> None:
        """The connection's writer and delivery state, before it joins the hub."""
        self.writer = FrameWriter(self.base_send, settings.REALTIME_CLIENT_BUFFER_BYTES, self.too_slow)
        self.sent_seq = 0
        self.buffer: list[Outgoing] | None = []  # events that arrive while we replay
        self.pending: list[Outgoing] = []  # batch mode: waiting for the next flush
        self._guard_transport()
        release_handshake_state(self.writer.protocol)

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

