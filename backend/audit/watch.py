"""The scheduled verification: each run checks every unit from the checkpoint the previous run
verified (incremental: its cost follows what was written since, not the trail's length), and the
whole trail once every AUDIT_VERIFY_FULL_HOURS (what an incremental run cannot see: an entry older
than the last verified checkpoint edited without re-hashing the rest, a checkpoint deleted).

`verification_compute` only reads (no transaction held while it walks); `verification_record`
stores each unit's outcome (AuditVerification, read by /metrics) and says which units broke, or
broke differently, since the last run: the caller notifies their admins in the same transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .keys import public_keys
from .models import AuditCheckpoint, AuditVerification
from .verify import UnitVerification, known_units, sink_compare, unit_verify


@dataclass
class Run:
    full: bool
    at: datetime
    units: list[UnitVerification]
    sink: str


def verification_compute(*, full: bool | None = None, chunk_size: int = 2000) -> Run:
    """Verify every known unit: incrementally, or in full when `full` (None: when one is due)."""
    now = timezone.now()
    states = {s.unit_id: s for s in AuditVerification.objects.all()}
    units = known_units()
    if full is None:
        horizon = now - timedelta(hours=settings.AUDIT_VERIFY_FULL_HOURS)
        # (a full_at in the future is as good as none: the table is not evidence, only a schedule)
        full = any(states.get(u) is None or states[u].full_at is None or not horizon <= states[u].full_at <= now
                   for u in units)
    keys = public_keys()
    results, since = [], now
    for unit_id, code in sorted(units.items(), key=lambda item: item[1]):
        state = states.get(unit_id)
        start = None
        if not full and state is not None and state.ok and state.through_checkpoint is not None:
            start = AuditCheckpoint.objects.filter(id=state.through_checkpoint, unit_id=unit_id).first()
        if start is None:
            since = None  # a unit read from its beginning: every checkpoint is compared with the sink
        elif since is not None:
            since = min(since, start.at)
        results.append(unit_verify(unit_id, code, start=start, chunk_size=chunk_size, keys=keys))
    status, mismatch = sink_compare(None, keys, since=None if full else since)
    if mismatch is not None:
        by_id = {str(r.unit_id): r for r in results}
        target = by_id.get(mismatch.get("unit") or "") or next(iter(results), None)
        if target is not None and target.ok:
            target.first_bad = mismatch
    return Run(full, now, results, status)


def _same_failure(old: dict | None, new: dict | None) -> bool:
    keys = ("rule", "position", "id")
    return old is not None and new is not None and all(old.get(k) == new.get(k) for k in keys)


def verification_record(run: Run) -> list[AuditVerification]:
    """Store `run`'s outcome per unit; returns the units that broke (or broke anew) in this run."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("verification_record() must run inside the transaction that notifies")
    states = {s.unit_id: s for s in AuditVerification.objects.select_for_update()}
    alarms = []
    for result in run.units:
        state = states.get(result.unit_id) or AuditVerification(unit_id=result.unit_id)
        was_ok, was_bad = state.ok if state.pk in states else True, state.first_bad
        state.unit_code, state.ok, state.first_bad = result.unit_code, result.ok, result.first_bad
        state.entries, state.checked_at = result.entries, run.at
        if result.ok:
            state.through_checkpoint = result.through.id if result.through is not None else None
        if run.full:
            state.full_at = run.at
        if not result.ok and (was_ok or not _same_failure(was_bad, result.first_bad)):
            state.notified_at = run.at
            alarms.append(state)
        state.save()
    return alarms


def verification_states(unit_ids: list[uuid.UUID] | None = None) -> list[AuditVerification]:
    states = AuditVerification.objects.all()
    return list(states if unit_ids is None else states.filter(unit_id__in=unit_ids))
