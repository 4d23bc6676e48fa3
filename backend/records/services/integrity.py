"""The audit trail's scheduled verification, with its notification: `audit_chain_broken` to the
admins (and reviewers: backend.audit.checkpoints.REVIEWER_ROLES) of a unit whose trail failed, and
to every active superuser (a unit wiped with its row has no admins left to tell). Once per failure:
a trail that stays broken the same way notifies nobody again. Here, above accounts and
notifications, because the audit app sits below both."""

from __future__ import annotations

import logging

from django.db import transaction

from backend.accounts.models import User
from backend.accounts.selectors import unit_recipients
from backend.audit.checkpoints import REVIEWER_ROLES
from backend.audit.watch import Run, verification_compute, verification_record
from backend.notifications.services import Draft, Kind, notify

logger = logging.getLogger(__name__)


def audit_chain_watch(*, full: bool | None = None) -> Run:
    """Verify every unit's trail (incremental; in full when one is due), store the outcome for
    /metrics and notify about each new failure."""
    run = verification_compute(full=full)
    with transaction.atomic():
        alarms = verification_record(run)
        if alarms:
            recipients = unit_recipients([a.unit_id for a in alarms], REVIEWER_ROLES)
            operators = list(User.objects.filter(is_superuser=True, is_active=True).values_list("id", flat=True))
            notify(
                Draft(
                    user_id=user_id, kind=Kind.AUDIT_CHAIN_BROKEN,
                    title=f"Audit trail of {alarm.unit_code} failed verification",
                    body=f"{alarm.first_bad['rule']} at position {alarm.first_bad.get('position')}: "
                         f"{alarm.first_bad['reason']}. See docs/operations.md, AuditChainBroken.",
                    link_entity="unit", link_id=alarm.unit_id,
                )
                for alarm in alarms
                for user_id in dict.fromkeys([*recipients.get(alarm.unit_id, []), *operators])
            )
    for alarm in alarms:
        logger.error("audit trail of unit %s failed verification: %s", alarm.unit_code, alarm.first_bad)
    return run
