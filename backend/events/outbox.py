"""The outbox relay: publish committed events to the channel layer, then mark them published.

Two callers, one code path: the committing process publishes its own events right after COMMIT
(`outbox_publish`, from `services.outbox_write`'s on_commit hook), and the sweeper publishes
whatever committed but stayed unpublished (a crash between COMMIT and publish, Redis away).

At-least-once: an event may be published twice (a crash between send and mark, or the sweeper
racing the committing process); receivers de-duplicate by (unit, seq).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from itertools import groupby

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from backend.common.faults import fault_point
from backend.common.trace import trace_stamp

from .broadcast import unit_events_send
from .models import OutboxEvent

logger = logging.getLogger(__name__)
SWEEP_BATCH = 2000
# A late publish of more events than this is a bulk chunk's, whose transaction writes hundreds of
# changes between its events' timestamp and its COMMIT (~0.4-0.6 s for 1,000 here): logged at INFO,
# not as a warning.
LATE_WARNING_MAX_EVENTS = 100


def _publish_rows(rows: list[dict]) -> None:
    rows.sort(key=lambda r: (str(r["unit_id"]), r["seq"]))
    by_unit = [
        (unit_id, [(r["seq"], r["frame"], r.get("activity") or "") for r in group])
        for unit_id, group in groupby(rows, key=lambda r: str(r["unit_id"]))
    ]
    unit_events_send(by_unit)


def outbox_publish(rows: list[dict]) -> int:
    """Publish just-committed events ({id, unit_id, seq, frame, activity, created_at}, as written).
    Never raises: if Redis is down the rows stay unpublished and the sweeper retries them."""
    trace_stamp("committed", first=False)  # the request trace (issue 33): its change's COMMIT is done
    fault_point("outbox.before_publish", events=len(rows))
    try:
        sending = time.monotonic()
        _publish_rows(list(rows))
        _log_if_late(rows, time.monotonic() - sending)
        OutboxEvent.objects.filter(id__in=[r["id"] for r in rows], published_at__isnull=True).update(
            published_at=timezone.now()
        )
        return len(rows)
    except Exception:  # noqa: BLE001 - the change is committed; publishing is retried by the sweeper
        logger.warning("publishing %d outbox events failed; the sweeper will retry", len(rows), exc_info=True)
        return 0


def _log_if_late(rows: list[dict], send_seconds: float) -> None:
    """The publishing side of a late update. The events' timestamp is written just before COMMIT, and
    commit -> client is measured from it; if the channel layer had them more than
    REALTIME_STALL_WARN_MS later, say so, split into what came before the send (the rest of the
    transaction and the COMMIT itself) and the send. With each Daphne's stall log, an update that
    reached its clients late has a line on the server that says where the time went."""
    limit = settings.REALTIME_STALL_WARN_MS / 1000
    written = rows[0].get("created_at") if rows else None
    if not limit or written is None:
        return
    late = time.time() - written.timestamp()
    if late > limit:
        first, last = rows[0], rows[-1]
        logger.log(
            logging.WARNING if len(rows) <= LATE_WARNING_MAX_EVENTS else logging.INFO,
            "%d event(s) (unit %s seq %s .. unit %s seq %s) reached the channel layer %.0f ms after they were "
            "written: %.0f ms before the send (the rest of the transaction, COMMIT), %.0f ms the send",
            len(rows), first["unit_id"], first["seq"], last["unit_id"], last["seq"], late * 1000,
            max(late - send_seconds, 0) * 1000, send_seconds * 1000,
        )


def outbox_sweep() -> int:
    """Publish events that committed but were never published (e.g. the worker was killed between
    COMMIT and publish), oldest first. Rows being swept are locked (SKIP LOCKED), so two sweepers
    never publish the same batch twice over; a repeat is harmless anyway."""
    cutoff = timezone.now() - timedelta(seconds=settings.OUTBOX_SWEEP_GRACE_SECONDS)
    stranded = OutboxEvent.objects.filter(published_at__isnull=True, created_at__lt=cutoff)
    # Looked for first without a transaction: on SQLite every transaction takes the one write lock
    # (BEGIN IMMEDIATE), and a sweep every second that finds nothing must not stand in the way of
    # the requests' and the worker's writes (issue 33).
    if not stranded.exists():
        return 0
    total = 0
    while True:
        with transaction.atomic():
            rows = list(
                OutboxEvent.objects.select_for_update(skip_locked=True)
                .filter(published_at__isnull=True, created_at__lt=cutoff)
                .order_by("created_at", "id")
                .values("id", "unit_id", "seq", "frame", "activity")[:SWEEP_BATCH]
            )
            if not rows:
                return total
            _publish_rows(rows)
            OutboxEvent.objects.filter(id__in=[r["id"] for r in rows]).update(published_at=timezone.now())
        total += len(rows)
        logger.info("outbox sweeper published %d stranded events", len(rows))
        if len(rows) < SWEEP_BATCH:
            return total


def outbox_prune() -> int:
    """Drop published events older than the retention window (resume beyond it gets resync)."""
    cutoff = timezone.now() - timedelta(days=settings.OUTBOX_RETENTION_DAYS)
    deleted, _ = OutboxEvent.objects.filter(published_at__isnull=False, created_at__lt=cutoff).delete()
    return deleted
