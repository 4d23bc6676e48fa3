"""The outbox relay: publish committed events to the channel layer, then mark them published.

Two callers, one code path: the committing process publishes its own events right after COMMIT
(`outbox_publish`, from `services.outbox_write`'s on_commit hook), and the sweeper publishes
whatever committed but stayed unpublished (a crash between COMMIT and publish, Redis away).

At-least-once: an event may be published twice (a crash between send and mark, or the sweeper
racing the committing process); receivers de-duplicate by (unit, seq).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from itertools import groupby

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from backend.common.faults import fault_point

from .broadcast import unit_events_send
from .models import OutboxEvent

logger = logging.getLogger(__name__)
SWEEP_BATCH = 2000


def _publish_rows(rows: list[dict]) -> None:
    rows.sort(key=lambda r: (str(r["unit_id"]), r["seq"]))
    by_unit = [
        (unit_id, [(r["seq"], r["frame"], r.get("activity") or "") for r in group])
        for unit_id, group in groupby(rows, key=lambda r: str(r["unit_id"]))
    ]
    unit_events_send(by_unit)


def outbox_publish(rows: list[dict]) -> int:
    """Publish just-committed events ({id, unit_id, seq, frame, activity}, as written). Never raises: if
    Redis is down the rows stay unpublished and the sweeper retries them."""
    fault_point("outbox.before_publish", events=len(rows))
    try:
        _publish_rows(list(rows))
        OutboxEvent.objects.filter(id__in=[r["id"] for r in rows], published_at__isnull=True).update(
            published_at=timezone.now()
        )
        return len(rows)
    except Exception:  # noqa: BLE001 - the change is committed; publishing is retried by the sweeper
        logger.warning("publishing %d outbox events failed; the sweeper will retry", len(rows), exc_info=True)
        return 0


def outbox_sweep() -> int:
    """Publish events that committed but were never published (e.g. the worker was killed between
    COMMIT and publish), oldest first. Rows being swept are locked (SKIP LOCKED), so two sweepers
    never publish the same batch twice over; a repeat is harmless anyway."""
    cutoff = timezone.now() - timedelta(seconds=settings.OUTBOX_SWEEP_GRACE_SECONDS)
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
