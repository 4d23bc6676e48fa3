"""Crates: create, edit, relocate, delete. Each call is one transaction that locks the crate, checks
role, version and status, bumps `version` and writes its outbox event and its audit entry."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from django.db import transaction
from django.utils import timezone

from backend.accounts.models import Role, Unit, User
from backend.audit.context import Origin
from backend.common.errors import CrateUnavailable, DomainError, InvalidTransition, NotFound, ValidationFailed
from backend.jobs.registry import Outcome, Work

from ..lifecycle import REQUEST_KINDS
from ..models import Crate, CrateStatus
from .changes import crate_change
from .checks import check_version, in_scope, refuse_held, require_role
from .journal import crate_entry, crate_state, diff, journal_write, unit_codes
from .numbers import next_number, reserve_numbers

_UNSET = object()


def crate_for_update(actor: User, crate_id: uuid.UUID) -> Crate:
    """The crate, locked; a deleted crate or one of another unit does not exist."""
    crate = Crate.objects.select_for_update().filter(id=crate_id, deleted_at__isnull=True).first()
    if crate is None or not in_scope(actor, crate.unit_id):
        raise NotFound("No such crate.")
    return crate


def bump(obj, fields) -> None:
    """Save `fields` of a crate or request with its version bumped."""
    obj.version += 1
    obj.updated_at = timezone.now()
    obj.save(update_fields=[*fields, "version", "updated_at"])


def require_reason(reason: str | None, what: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed(f"A reason is required to {what}.", code="reason_required")
    return reason


def _created(actor: User, crates: list[Crate]) -> None:
    codes = unit_codes(c.unit_id for c in crates)
    changes, entries = [], []
    for crate in crates:
        change = crate_change(crate, "created", actor=actor)
        changes.append(change)
        entries.append(crate_entry(crate, "created", diff({}, crate_state(crate, codes)), change=change))
    journal_write(actor=actor, changes=changes, entries=entries)


@transaction.atomic
def crate_create(
    *, actor: User, location: str = "", destruction_due: date | None = None, unit: Unit | None = None
) -> Crate:
    require_role(actor, Role.STORE)
    unit = unit if (unit is not None and actor.is_superuser) else actor.unit
    if unit is None:
        raise ValidationFailed("A crate needs a unit.", code="unit_required")
    crate = Crate.objects.create(
        crate_number=next_number("archive", "CR"),
        unit=unit,
        location=location,
        destruction_due=destruction_due,
    )
    _created(actor, [crate])
    return crate


def new_crates(unit: Unit, count: int, location_prefix: str = "Aisle") -> list[Crate]:
    """`count` crates in storage, numbered from one block, in the caller's transaction. The caller
    journals them (their events and audit entries)."""
    year, first = reserve_numbers("archive", "CR", count)
    return Crate.objects.bulk_create(
        Crate(
            crate_number=f"CR-{year}-{first + i:04d}",
            unit=unit,
            location=f"{location_prefix} {(first + i) % 40 + 1}, shelf {(first + i) % 12 + 1}",
        )
        for i in range(count)
    )


@transaction.atomic
def crates_create_bulk(*, actor: User, unit: Unit, count: int, location_prefix: str = "Aisle") -> list[Crate]:
    """Create `count` crates in one transaction (demo and benchmark data): one number block, one
    journal write."""
    require_role(actor, Role.STORE)
    if not actor.is_superuser and actor.unit_id != unit.id:
        raise NotFound("No such unit.")
    crates = new_crates(unit, count, location_prefix)
    _created(actor, crates)
    return crates


@transaction.atomic
def crate_update(
    *,
    actor: User,
    crate_id: uuid.UUID,
    expected_version: int | None,
    location: str | object = _UNSET,
    destruction_due: date | None | object = _UNSET,
    change_reason: str = "",
    action: str = "updated",
) -> Crate:
    require_role(actor, Role.STORE)
    crate = crate_for_update(actor, crate_id)
    check_version(crate, expected_version)
    if crate.status == CrateStatus.DESTROYED:
        raise InvalidTransition(f"{crate} is destroyed and can no longer change.")
    before = crate_state(crate)
    changed = []
    if location is not _UNSET:
        crate.location = location
        changed.append("location")
    if destruction_due is not _UNSET:
        crate.destruction_due = destruction_due
        changed.append("destruction_due")
    bump(crate, changed)
    change = crate_change(crate, "updated", actor=actor)
    entry = crate_entry(crate, action, diff(before, crate_state(crate)), change=change, reason=change_reason)
    journal_write(actor=actor, changes=[change], entries=[entry])
    return crate


def crate_relocate_check(*, actor: User, crate: Crate, location: str, expected_version: int | None = None) -> None:
    """What can be refused before queueing a relocation; the job re-checks under lock."""
    if not in_scope(actor, crate.unit_id) or crate.deleted_at is not None:
        raise NotFound("No such crate.")
    require_role(actor, Role.STORE)
    if not location or not location.strip():
        raise ValidationFailed("A relocation needs a location.", code="location_required")
    check_version(crate, expected_version)
    if crate.status == CrateStatus.DESTROYED:
        raise InvalidTransition(f"{crate} is destroyed and can no longer be relocated.")


def crate_relocate(
    *, actor: User, crate_id: uuid.UUID, location: str, expected_version: int | None = None, reason: str = ""
) -> Crate:
    """Move a crate: `crate_update`'s one transaction (its own atomic block, a savepoint inside a
    caller's transaction, which undoes a refused move); the location is checked before it."""
    if not location or not location.strip():
        raise ValidationFailed("A relocation needs a location.", code="location_required")
    return crate_update(
        actor=actor, crate_id=crate_id, expected_version=expected_version, location=location.strip(),
        change_reason=reason, action="relocated",
    )


def crates_relocate_batch(works: list[Work]) -> dict[Any, Outcome]:
    """The relocations of several jobs (`crate.relocate`'s `apply_batch`, issue 30), in the caller's
    transaction: one lock of their crates, one UPDATE, one journal write. Each job is checked as
    `crate_relocate` checks it (location, role, the crate in the actor's unit, version, not
    destroyed), in the jobs' order, against the crates as the jobs before it left them; a refused job
    changes nothing. Each applied job gets its own event and audit entry, with its own actor, client
    and job id. Returns each job's result dict or its DomainError."""
    ids = set()
    for work in works:
        try:
            ids.add(uuid.UUID(work.target))
        except ValueError:
            pass
    crates = {
        crate.id: crate
        for crate in Crate.objects.select_for_update().filter(id__in=ids, deleted_at__isnull=True).order_by("id")
    }
    now = timezone.now()
    outcomes: dict[Any, Outcome] = {}
    changed: dict[uuid.UUID, Crate] = {}
    changes, entries = [], []
    for work in works:
        try:
            crate, location = _relocation_checked(work, crates)
        except DomainError as refused:
            outcomes[work.job_id] = refused
            continue
        before = crate_state(crate)
        crate.location, crate.version, crate.updated_at = location, crate.version + 1, now
        changed[crate.id] = crate
        change = crate_change(crate, "updated", actor=work.actor)
        entry = crate_entry(crate, "relocated", diff(before, crate_state(crate)), change=change,
                            reason=work.params.get("reason", ""))
        entry.by = work.actor
        entry.origin = Origin(client_ip=work.client_ip, user_agent=work.user_agent, job_id=work.job_id)
        changes.append(change)
        entries.append(entry)
        outcomes[work.job_id] = {"id": str(crate.id), "location": crate.location, "version": crate.version}
    if changed:
        Crate.objects.bulk_update(list(changed.values()), ["location", "version", "updated_at"])
        journal_write(actor=works[0].actor, changes=changes, entries=entries)
    return outcomes


def _relocation_checked(work: Work, crates: dict[uuid.UUID, Crate]) -> tuple[Crate, str]:
    location = work.params.get("location", "")
    if not location or not isinstance(location, str) or not location.strip():
        raise ValidationFailed("A relocation needs a location.", code="location_required")
    require_role(work.actor, Role.STORE)
    try:
        crate = crates.get(uuid.UUID(work.target))
    except ValueError:
        crate = None
    if crate is None or not in_scope(work.actor, crate.unit_id):
        raise NotFound("No such crate.")
    check_version(crate, work.params.get("expected_version"))
    if crate.status == CrateStatus.DESTROYED:
        raise InvalidTransition(f"{crate} is destroyed and can no longer change.")
    return crate, location.strip()


@transaction.atomic
def crate_delete(*, actor: User, crate_id: uuid.UUID, expected_version: int | None, reason: str) -> Crate:
    """Soft delete: the crate is kept, hidden from lists, with who, when and why."""
    require_role(actor, Role.STORE)
    crate = crate_for_update(actor, crate_id)
    reason = require_reason(reason, "delete a crate")
    check_version(crate, expected_version)
    refuse_held([crate], "no crate may be deleted")
    # Requests keep their crates for the record: a crate that was ever requested stays.
    if any(getattr(crate, f"{k}_requests").exists() for k in REQUEST_KINDS):
        raise CrateUnavailable(f"{crate} is part of a request and cannot be deleted.")
    crate.deleted_at, crate.deleted_by, crate.delete_reason = timezone.now(), actor, reason
    bump(crate, ["deleted_at", "deleted_by", "delete_reason"])
    change = crate_change(crate, "deleted", actor=actor)
    entry = crate_entry(crate, "deleted", {"deleted": [False, True]}, change=change, reason=reason)
    journal_write(actor=actor, changes=[change], entries=[entry])
    return crate
