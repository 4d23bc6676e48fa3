"""Lists that join the stream without a gap: `X-Records-Seq` (docs/realtime.md, "From a list to live").

A unit list is read in one database snapshot together with the unit's seq counter, so the header
names exactly the seq the list reflects: every change with seq <= n is in it and none after. That
holds because a seq is taken under the counter row's lock in the transaction that makes the change:
the counter a snapshot sees was committed with the changes it counts, never apart from them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import connection, transaction

from .selectors import unit_stream

SEQ_HEADER = "X-Records-Seq"
EPOCH_HEADER = "X-Records-Epoch"


@contextlib.contextmanager
def snapshot_read() -> Iterator[None]:
    """Every query inside sees one snapshot of the database.

    PostgreSQL: a REPEATABLE READ transaction (its snapshot is taken at the first query). SQLite:
    one transaction, which with this project's BEGIN IMMEDIATE holds the write lock for the
    list's few milliseconds, so no change can commit in between. Inside a caller's transaction
    (a test's) the caller's isolation stands: it cannot be changed after its first query."""
    if connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


class SeqWatermarkedList:
    """For a viewset of one unit's records: `list` runs in one snapshot with the unit's seq and
    answers it in `X-Records-Seq` (and the stream's epoch in `X-Records-Epoch`). A superuser's list
    spans every unit, so no single seq describes it: it carries no header."""

    def list(self, request, *args, **kwargs):
        user = request.user
        unit_id = getattr(user, "unit_id", None)
        if unit_id is None or getattr(user, "is_superuser", False):
            return super().list(request, *args, **kwargs)
        with snapshot_read():
            seq, epoch = unit_stream(unit_id)
            # DRF's list() serializes inside (serializer.data): every row and prefetch is read here.
            response = super().list(request, *args, **kwargs)
        response[SEQ_HEADER] = str(seq)
        if epoch:
            response[EPOCH_HEADER] = epoch
        return response
