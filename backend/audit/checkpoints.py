"""Signed checkpoints: each unit's chain head, signed outside the database's reach and copied to
an append-only sink, so that what the chain held at a moment can be proved later.

`checkpoints_write` runs every AUDIT_CHECKPOINT_MINUTES (beat), after every purge and at the end
of every bulk job. A unit whose head (and purges) did not move since its last checkpoint gets none:
that checkpoint still vouches for it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable
from typing import Any

from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from .chain import GENESIS, canonical_time
from .keys import signer
from .models import AuditCheckpoint, AuditEntry, AuditPurge
from .sinks import sink

logger = logging.getLogger(__name__)

# Who may read the checkpoints and is told when verification fails, besides superusers: unit
# admins and quality assurance (accounts.Role; by value, audit sits below accounts).
REVIEWER_ROLES = ("admin", "qa")

# pg_advisory_xact_lock key: one checkpoint writer at a time (SQLite's writes are serial anyway).
_LOCK_KEY = 0x61756469  # "audi"


def payload(checkpoint: AuditCheckpoint) -> bytes:
    """What a checkpoint's signature covers: canonical JSON (sorted keys, no whitespace, UTF-8)."""
    return json.dumps(
        {
            "id": str(checkpoint.id), "unit": str(checkpoint.unit_id), "position": checkpoint.position,
            "hash": checkpoint.hash, "purged_through": checkpoint.purged_through,
            "at": canonical_time(checkpoint.at),
        },
        sort_keys=True, separators=(",", ":"),
    ).encode()


def checkpoint_document(checkpoint: AuditCheckpoint) -> dict[str, Any]:
    """A checkpoint as the sink holds it and the API shows it."""
    return {
        "id": str(checkpoint.id), "unit": str(checkpoint.unit_id), "unit_code": checkpoint.unit_code,
        "position": checkpoint.position, "hash": checkpoint.hash, "purged_through": checkpoint.purged_through,
        "at": canonical_time(checkpoint.at), "key_id": checkpoint.key_id, "signature": checkpoint.signature,
    }


def _units(unit_ids: Iterable[uuid.UUID] | None) -> dict[uuid.UUID, str]:
    """{id: code} of the units to checkpoint (audit reaches the Unit model through its entries)."""
    units = AuditEntry._meta.get_field("unit").related_model.objects.all()
    if unit_ids is not None:
        units = units.filter(id__in=list(unit_ids))
    return dict(units.values_list("id", "code"))


@transaction.atomic
def checkpoints_write(unit_ids: Iterable[uuid.UUID] | None = None, *,
                      purged: dict[uuid.UUID, int] | None = None) -> list[AuditCheckpoint]:
    """Sign and record the head of every unit (or of `unit_ids`) whose chain or purges moved since
    its last checkpoint. The sink gets them before the database commits them: a sink that fails
    leaves no checkpoint in the database either (the next run tries again).

    `purged` ({unit: through_position}) is the purge service's word for the purges it just made.
    Nothing else moves `purged_through` on: a purge record found in the table is not signed for (a
    forged one stays uncovered), except by a unit's first checkpoint, which vouches for the trail
    as it finds it."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
    key = signer()
    now = timezone.now()
    drafts = []
    for unit_id, code in sorted(_units(unit_ids).items(), key=lambda item: str(item[0])):
        head = AuditEntry.objects.filter(unit_id=unit_id).order_by("-position").values_list("position", "hash").first()
        if head is None:
            purge = AuditPurge.objects.filter(unit_id=unit_id).order_by("-through_position").first()
            head = (purge.through_position, purge.through_hash) if purge else (0, GENESIS)
        if head[0] == 0:
            continue  # nothing written yet: nothing to vouch for
        last = AuditCheckpoint.objects.filter(unit_id=unit_id).order_by("-position", "-at").first()
        if last is None:
            through = AuditPurge.objects.filter(unit_id=unit_id).aggregate(m=Max("through_position"))["m"] or 0
        else:
            through = max(last.purged_through, (purged or {}).get(unit_id, 0))
        if last is not None and (last.position, last.hash, last.purged_through) == (head[0], head[1], through):
            continue
        checkpoint = AuditCheckpoint(
            id=uuid.uuid4(), unit_id=unit_id, unit_code=code, position=head[0], hash=head[1],
            purged_through=through, at=now, key_id=key.key_id,
        )
        checkpoint.signature = key.sign(payload(checkpoint))
        drafts.append(checkpoint)
    if not drafts:
        return []
    out = sink()
    if out is not None:
        out.append([checkpoint_document(c) for c in drafts])
    AuditCheckpoint.objects.bulk_create(drafts)
    logger.info("audit checkpoints: %s", ", ".join(f"{c.unit_code}#{c.position}" for c in drafts))
    return drafts
