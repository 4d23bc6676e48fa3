"""The notifications records' changes cause, written through `backend.notifications.services.notify`
in the change's own transaction (so a rolled-back change notifies nobody), set-based: one INSERT
for a bulk chunk's requests.

- `request_decided`: to the request's creator, for each request approved, rejected or sent back;
- `transfer_incoming`: to the destination unit's approvers and admins, when a transfer is filed,
  resubmitted or redirected to them;
- `destruction_due`: to a unit's approvers, store users and admins, once per crate and threshold
  (NOTIFY_DESTRUCTION_DUE_DAYS), from the hourly beat task; a crate under legal hold is said to be.
"""

from __future__ import annotations

import uuid
import zoneinfo
from collections.abc import Iterable
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from backend.accounts.models import Role, Unit, User
from backend.accounts.selectors import unit_recipients
from backend.notifications.services import Draft, Kind, notify

from ..actions import Action
from ..lifecycle import RequestKind
from ..models import BaseRequest, Crate, CrateStatus, TransferRequest
from .journal import unit_codes

INCOMING_ROLES = (Role.APPROVER, Role.ADMIN)
DESTRUCTION_DUE_ROLES = (Role.APPROVER, Role.STORE, Role.ADMIN)
CRATES_PER_TRANSACTION = 500


def decided_notify(kind: RequestKind, requests: Iterable[BaseRequest], action: Action, actor: User, reason: str = "") -> None:
    """`request_decided` to the creator of each request `actor` just decided."""
    past = action.notice
    because = f": {reason}" if reason else "."
    notify(
        Draft(
            user_id=r.created_by_id, kind=Kind.REQUEST_DECIDED, title=f"{r.request_number} {past}",
            body=f"{actor.username} {past} your {kind.entity} request {r.request_number}{because}",
            link_entity=kind.entity, link_id=r.id, unit_id=r.unit_id,
        )
        for r in requests
        if r.created_by_id and r.created_by_id != actor.id
    )


def incoming_notify(requests: Iterable[BaseRequest], actor: User, verb: str) -> None:
    """`transfer_incoming` to the approvers and admins of each transfer's destination unit."""
    transfers = [r for r in requests if isinstance(r, TransferRequest) and r.destination_unit_id]
    if not transfers:
        return
    recipients = unit_recipients({r.destination_unit_id for r in transfers}, INCOMING_ROLES)
    codes = unit_codes([r.unit_id for r in transfers] + [r.destination_unit_id for r in transfers])
    notify(
        Draft(
            user_id=user_id, kind=Kind.TRANSFER_INCOMING,
            title=f"Incoming transfer {r.request_number} from {codes.get(r.unit_id, '')}",
            body=f"{actor.username} {verb} transfer request {r.request_number} from {codes.get(r.unit_id, '')} "
            f"to {codes.get(r.destination_unit_id, '')}.",
            link_entity="transfer", link_id=r.id, unit_id=r.destination_unit_id,
        )
        for r in transfers
        for user_id in recipients.get(r.destination_unit_id, [])
        if user_id != actor.id
    )


def _unit_today(unit: Unit, now: datetime) -> date:
    try:
        return now.astimezone(zoneinfo.ZoneInfo(unit.timezone)).date()
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return now.date()


def destruction_due_notify(now: datetime | None = None) -> int:
    """Alert each unit's approvers, store users and admins of its crates in storage whose
    `destruction_due` is within a threshold of NOTIFY_DESTRUCTION_DUE_DAYS (days, in the unit's
    time zone): once per crate, threshold and user. A crate belongs to the tightest threshold it
    is within (30 and 7: 8..30 days left is the 30-day alert, 7 or fewer — overdue included — the
    7-day one), so a crate first seen 5 days before its date gets the 7-day alert only.

    Idempotent, even run twice at once (two beat instances): the rows are inserted ignoring
    conflicts on the (crate, threshold, user) constraint, and only the rows this run inserted are
    sent. Returns how many notifications it wrote."""
    thresholds = sorted(set(settings.NOTIFY_DESTRUCTION_DUE_DAYS), reverse=True)
    if not thresholds:
        return 0
    now = now or timezone.now()
    written = 0
    for unit in Unit.objects.order_by("code"):
        today = _unit_today(unit, now)
        crates = (
            Crate.objects.filter(
                unit_id=unit.id, status=CrateStatus.IN_STORAGE, deleted_at__isnull=True,
                destruction_due__lte=today + timedelta(days=thresholds[0]),
            )
            .order_by("id")
            .values_list("id", "crate_number", "destruction_due", "on_hold")
        )
        due = list(crates)
        if not due:
            continue
        users = unit_recipients([unit.id], DESTRUCTION_DUE_ROLES)[unit.id]
        if not users:
            continue
        for start in range(0, len(due), CRATES_PER_TRANSACTION):
            drafts = []
            for crate_id, number, when, on_hold in due[start : start + CRATES_PER_TRANSACTION]:
                left = (when - today).days
                threshold = next(t for t in reversed(thresholds) if left <= t)  # the tightest it is within
                drafts += [_due_draft(user_id, crate_id, number, when, left, threshold, on_hold) for user_id in users]
            with transaction.atomic():
                written += len(notify(drafts, once=True))
    return written


def _due_draft(
    user_id: uuid.UUID, crate_id: uuid.UUID, number: str, when: date, left: int, threshold: int, on_hold: bool = False,
) -> Draft:
    if left > 0:
        body = f"Crate {number} is due for destruction on {when.isoformat()}, in {left} day{'s' if left != 1 else ''}."
    elif left == 0:
        body = f"Crate {number} is due for destruction today ({when.isoformat()})."
    else:
        body = f"Crate {number} was due for destruction on {when.isoformat()} ({-left} days ago)."
    if on_hold:  # litigation freezes destruction: the alert says so, and nobody should act on it
        body += " It is ON LEGAL HOLD: it must not be destroyed until the hold is released."
    return Draft(
        user_id=user_id, kind=Kind.DESTRUCTION_DUE,
        title=f"{number} due for destruction {when.isoformat()}{' (on legal hold)' if on_hold else ''}",
        body=body, link_entity="crate", link_id=crate_id, threshold=threshold,
    )
