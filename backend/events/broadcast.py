"""Sending to the channel layer from synchronous code (Celery workers, Django views, commands).

A Celery worker is synchronous; `async_to_sync(layer.group_send)` there would spin up an event loop
per call and, with it, a fresh Redis connection pool (channels-redis keys pools by loop). Instead
each process keeps one event loop in a daemon thread and submits sends to it, so connections are
reused across sends. The thread is made lazily and again after a fork (Celery's prefork pool).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Coroutine, Iterable
from typing import Any

from channels.layers import get_channel_layer

from backend.common.trace import trace_for_message, trace_stamp

from . import groups
from .groups import unit_group_name, user_group_name

logger = logging.getLogger(__name__)

SEND_TIMEOUT_SECONDS = 10
# Frames per channel-layer message when a transaction produced many events (bulk chunks).
EVENTS_PER_MESSAGE = 500


class _LoopThread:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="channel-layer-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine, timeout: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            # The layer's sockets have no read timeout: a send stuck on a dead Redis would stay
            # pending on this loop for good, holding its connection. The caller gave up; so do we.
            future.cancel()
            raise


_runner: _LoopThread | None = None
_runner_lock = threading.Lock()


def _run(coro: Coroutine, timeout: float = SEND_TIMEOUT_SECONDS) -> Any:
    global _runner
    with _runner_lock:
        if _runner is None or _runner.pid != os.getpid():
            _runner = _LoopThread()
        runner = _runner
    return runner.run(coro, timeout)


def unit_events_message(unit_id: str, events: list[tuple], trace: dict | None = None) -> dict[str, Any]:
    """One channel-layer message carrying already-encoded `data_update` frames, in seq order: each
    event is `[seq, frame]`, or `[seq, frame, activity]` when the update has activity frames (the
    audit entries of a person's change, one JSON frame per line, for `activity=1` clients). `trace`:
    the request trace's stamps (backend/common/trace.py), for the hub only (never in a frame)."""
    message = {
        "type": groups.UNIT_EVENTS, "unit_id": str(unit_id),
        "events": [[seq, frame, *rest] if rest and rest[0] else [seq, frame] for seq, frame, *rest in events],
    }
    if trace:
        message["trace"] = trace
    return message


async def _send_unit_events(batches: list[tuple[str, list[tuple]]], trace: dict | None = None) -> None:
    layer = get_channel_layer()
    for unit_id, events in batches:
        for start in range(0, len(events), EVENTS_PER_MESSAGE):
            chunk = events[start : start + EVENTS_PER_MESSAGE]
            await layer.group_send(unit_group_name(unit_id), unit_events_message(unit_id, chunk, trace))


def unit_events_send(by_unit: Iterable[tuple[str, list[tuple]]]) -> None:
    """Broadcast committed events: `by_unit` is [(unit_id, [(seq, frame[, activity]), ...]), ...] in
    seq order."""
    batches = [(str(unit_id), list(events)) for unit_id, events in by_unit if events]
    if batches:
        trace_stamp("published", first=False)  # the request trace (issue 33), if this change has one
        _run(_send_unit_events(batches, trace_for_message()))


def job_update_send(user_id: Any, job: dict[str, Any], unit_id: Any = None) -> None:
    """Progress of a job, to the connections of the user who started it that are in the job's unit
    (`unit_id`; a user moved since hears nothing of the old unit's jobs). Best effort: the job
    itself is durable and readable at /api/jobs/{id}/."""
    layer = get_channel_layer()
    message = {"type": groups.JOB_UPDATE, "user_id": str(user_id), "job": job,
               "unit_id": str(unit_id) if unit_id is not None else None}
    try:
        _run(layer.group_send(user_group_name(user_id), message))
    except Exception:  # noqa: BLE001 - a lost progress message must never fail the job
        logger.warning("job_update for %s not sent", job.get("id"), exc_info=True)


def user_close_send(user_id: Any, code: int) -> None:
    """Close every WebSocket of a user, in every Daphne process, with `code` (4003: access revoked;
    4002: the token is no longer valid). Best effort: each hub re-validates its users every few
    seconds anyway."""
    layer = get_channel_layer()
    message = {"type": groups.USER_CLOSE, "user_id": str(user_id), "code": code}
    try:
        _run(layer.group_send(user_group_name(user_id), message))
    except Exception:  # noqa: BLE001 - the periodic re-validation closes them within seconds
        logger.warning("closing the sockets of user %s not sent", user_id, exc_info=True)


# Notifications per channel-layer message (a bulk chunk may notify one creator of hundreds).
NOTIFICATIONS_PER_MESSAGE = 100


async def _send_notifications(by_user: dict[str, list[dict[str, Any]]]) -> None:
    layer = get_channel_layer()
    for user_id, notifications in by_user.items():
        for start in range(0, len(notifications), NOTIFICATIONS_PER_MESSAGE):
            message = {
                "type": groups.USER_NOTIFICATIONS, "user_id": str(user_id),
                "notifications": notifications[start : start + NOTIFICATIONS_PER_MESSAGE],
            }
            await layer.group_send(user_group_name(user_id), message)


def notifications_send(by_user: dict[str, list[dict[str, Any]]]) -> None:
    """Committed notifications to the connections of their users (`{user id: [notification, ...]}`).
    Best effort: the rows are durable; a reconnecting client gets the count and lists them."""
    try:
        _run(_send_notifications(by_user))
    except Exception:  # noqa: BLE001 - a lost frame must never fail the change that committed
        logger.warning("notifications for %d users not sent", len(by_user), exc_info=True)


def unit_epoch_send(unit_id: Any, epoch: str, seq: int) -> None:
    """Tell the unit's hubs that its stream has a new epoch (backend/events/epochs.py): they resync
    their connections at once. Best effort: each hub notices it at its next catch-up tick anyway."""
    layer = get_channel_layer()
    message = {"type": groups.UNIT_EPOCH, "unit_id": str(unit_id), "epoch": epoch, "seq": seq}
    try:
        _run(layer.group_send(unit_group_name(unit_id), message))
    except Exception:  # noqa: BLE001 - the catch-up tick compares epochs too
        logger.warning("the new epoch of unit %s not sent", unit_id, exc_info=True)


def notification_read_send(user_id: Any, message: dict[str, Any]) -> None:
    """A `notification_read` message to every connection of the user (their other tabs). Best
    effort: the read state is durable, and a reconnecting client's count reflects it."""
    layer = get_channel_layer()
    try:
        _run(layer.group_send(user_group_name(user_id), {"type": groups.USER_FRAME, "user_id": str(user_id),
                                                          "message": message}))
    except Exception:  # noqa: BLE001 - never fail the request that marked them read
        logger.warning("notification_read for user %s not sent", user_id, exc_info=True)
