"""Stream epochs: which numbering a unit's seqs belong to (docs/realtime.md, "Epochs").

A client resumes with `last_seq` and the `epoch` it was counting in. The epoch changes whenever the
unit's seqs can no longer continue what clients saw:
- an outbox reset (`streams_reset`, `manage.py reset_streams`) always gives a new epoch;
- a database restored from a dump brings its old counter rows back, epoch included. Operators run
  `manage.py reset_streams` after a restore (docs/operations.md); as a net, the relay's
  `streams_watch` keeps each unit's high-water mark (epoch, seq) in the keys Redis and gives a new
  epoch to a unit whose seq went backwards under the same epoch.
Either way the hubs hear the new epoch at once (`unit.epoch`) and tell their connections
`resync_required` with reason `epoch_changed`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable

from django.db import transaction

from backend.common.redis import keys_client

from .broadcast import unit_epoch_send
from .models import OutboxEvent, UnitSequence, new_epoch

logger = logging.getLogger(__name__)

# unit id -> "<epoch>:<seq>", the highest seq the relay has seen committed under that epoch.
HIGH_WATER_KEY = "streams:high-water"


def streams_reset(unit_ids: Iterable[uuid.UUID | str] | None = None, *, restart: bool = False) -> dict[str, tuple[str, int]]:
    """Give the units' streams (all units' when None) a new epoch. With `restart`, also empty their
    outbox and count from seq 0 again. Returns {unit id: (new epoch, seq)}; the units' hubs are told
    after COMMIT."""
    renewed: dict[str, tuple[str, int]] = {}
    with transaction.atomic():
        rows = UnitSequence.objects.select_for_update().order_by("unit_id")
        if unit_ids is not None:
            rows = rows.filter(unit_id__in=[str(u) for u in unit_ids])
        for row in rows:
            row.epoch = new_epoch()
            if restart:
                OutboxEvent.objects.filter(unit_id=row.unit_id).delete()
                row.last_seq = 0
            row.save(update_fields=["epoch", "last_seq"])
            renewed[str(row.unit_id)] = (row.epoch, row.last_seq)
        transaction.on_commit(lambda: _announce(renewed))
    logger.warning("stream epochs renewed for %d unit(s)%s", len(renewed), " (seqs restarted)" if restart else "")
    return renewed


def _announce(renewed: dict[str, tuple[str, int]]) -> None:
    for unit_id, (epoch, seq) in renewed.items():
        unit_epoch_send(unit_id, epoch, seq)


def streams_watch() -> list[str]:
    """Compare every unit's committed (epoch, seq) with the high-water mark kept in Redis; a unit whose
    seq is below its mark under the same epoch was restored from an older copy: it gets a new epoch.
    Then raise the marks. Returns the units renewed. Raises when Redis or the database is away."""
    client = keys_client()
    marks = {key.decode(): value.decode() for key, value in client.hgetall(HIGH_WATER_KEY).items()}
    current = {str(unit): (epoch, seq) for unit, seq, epoch in UnitSequence.objects.values_list("unit_id", "last_seq", "epoch")}
    behind = []
    for unit_id, (epoch, seq) in current.items():
        mark_epoch, _, mark_seq = marks.get(unit_id, "").partition(":")
        if mark_epoch == epoch and mark_seq.isdigit() and int(mark_seq) > seq:
            behind.append(unit_id)
    renewed = {}
    if behind:
        logger.warning("units %s are behind seqs their clients may have seen (a restored database?): new epochs",
                       ", ".join(behind))
        renewed = _renew_if_unchanged({unit: current[unit][0] for unit in behind})
    marks_now = {unit: "{}:{}".format(*renewed.get(unit, current[unit])) for unit in current}
    updates = {unit: mark for unit, mark in marks_now.items() if marks.get(unit) != mark}  # only what moved
    if updates:
        client.hset(HIGH_WATER_KEY, mapping=updates)
    return sorted(renewed)


def _renew_if_unchanged(epochs: dict[str, str]) -> dict[str, tuple[str, int]]:
    """New epochs for units still at the epoch the watch judged (another relay may have renewed it)."""
    renewed: dict[str, tuple[str, int]] = {}
    with transaction.atomic():
        for row in UnitSequence.objects.select_for_update().filter(unit_id__in=list(epochs)).order_by("unit_id"):
            if row.epoch == epochs[str(row.unit_id)]:
                row.epoch = new_epoch()
                row.save(update_fields=["epoch"])
                renewed[str(row.unit_id)] = (row.epoch, row.last_seq)
        transaction.on_commit(lambda: _announce(renewed))
    return renewed
