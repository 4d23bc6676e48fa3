"""Legal holds: litigation (or an inspection) freezes destruction.

QA or a unit admin places a hold on crates of their unit, with a reason and a signature (meaning
`hold`), and releases it the same way (meaning `released`). A crate under a hold that is not
released shows `on_hold` and is not destroyed, transferred out of the unit or deleted:

- filing or editing a destruction or transfer request that names it: 409 `legal_hold`;
- approving one (single, queued or bulk): the request's outcome is `legal_hold`, decided under the
  crates' row locks, so a hold placed while the approval's job waits in the queue still stops it;
- `destruction_due` alerts say the crate is on hold.

The race between a hold and an approval is settled by the crates' row locks (both take them in id
order): whichever commits first wins, and the other sees it. A hold on a crate already destroyed is
refused (409 `crate_unavailable`), so a held crate is never a destroyed one.

Each hold and release is one transaction: the hold, `on_hold` of its crates (version bumped), an
audit entry for the hold and one for each crate (both under the signature), the signature bound
to the hold, and the unit's events (`legal_hold` created/updated and each crate updated).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from backend.accounts.models import Role, User
from backend.audit.models import Signature
from backend.audit.services import Binding, signature_apply
from backend.common.errors import CrateUnavailable, InvalidTransition, NotFound, ValidationFailed
from backend.events.services import Change

from ..models import Crate, CrateStatus
from ..models import LegalHold as Hold
from .changes import crate_change
from .checks import in_scope, require_role
from .crates import require_reason
from .journal import Entry, crate_entry, journal_write
from .numbers import next_number

ENTITY = "legal_hold"
HOLD_ROLES = (Role.QA,)  # and unit admins, who hold every role
MAX_CRATES = 1000


def hold_content(hold: Hold, crate_ids: Iterable[uuid.UUID]) -> dict:
    """What a signature on a hold binds: the hold as the placement or release left it."""
    return {
        "hold_number": hold.hold_number, "unit": str(hold.unit_id), "reason": hold.reason,
        "crates": sorted(str(c) for c in crate_ids), "released": hold.released_at is not None,
        "release_reason": hold.release_reason,
    }


def hold_precheck(*, actor: User, reason: str, crate_ids: list[uuid.UUID] | None = None) -> list[Crate]:
    """What refuses a hold (or, without `crate_ids`, a release) before a signature is asked for:
    the role, the unit, the reason, and crates that are not the unit's or are destroyed."""
    require_role(actor, *HOLD_ROLES)
    if actor.unit_id is None:
        raise ValidationFailed("Only users of a unit place or release its holds.", code="unit_required")
    require_reason(reason, "place or release a legal hold")
    if crate_ids is None:
        return []
    if not crate_ids:
        raise ValidationFailed("A hold needs at least one crate.", code="crates_required")
    if len(set(crate_ids)) > MAX_CRATES:
        raise ValidationFailed(f"A hold names at most {MAX_CRATES} crates.", code="too_many")
    return _crates(actor, crate_ids, lock=False)


def _crates(actor: User, crate_ids: Iterable[uuid.UUID], *, lock: bool) -> list[Crate]:
    ids = sorted(set(crate_ids), key=str)
    crates = Crate.objects.filter(id__in=ids, deleted_at__isnull=True, unit_id=actor.unit_id).order_by("id")
    crates = list(crates.select_for_update() if lock else crates)
    if len(crates) != len(ids):
        raise ValidationFailed("Unknown crate in the hold.", code="unknown_crate")
    destroyed = [c.crate_number for c in crates if c.status == CrateStatus.DESTROYED]
    if destroyed:
        raise CrateUnavailable(f"Already destroyed: {', '.join(destroyed)}.", details={"crates": destroyed})
    return crates


def _hold_change(hold: Hold, action: str, actor: User) -> Change:
    data = {"id": str(hold.id), "status": "released" if hold.released_at else "placed", "actor": actor.username}
    return Change(hold.unit_id, ENTITY, action, data)


def _signed(signature: Signature, actor: User, meaning: str) -> Signature:
    if (signature.signer_id, signature.meaning, signature.entity) != (actor.id, meaning, ENTITY):
        raise ValidationFailed("This hold carries no signature of its signer.", code="signature_required")
    return signature


@transaction.atomic
def hold_place(*, actor: User, crate_ids: list[uuid.UUID], reason: str, signature: Signature) -> Hold:
    """Place a hold on `crate_ids` (the actor's unit's), signed by `signature` (meaning `hold`)."""
    hold_precheck(actor=actor, reason=reason, crate_ids=crate_ids)
    _signed(signature, actor, "hold")
    crates = _crates(actor, crate_ids, lock=True)
    now = timezone.now()
    hold = Hold.objects.create(
        hold_number=next_number(str(actor.unit_id), "LH"), unit_id=actor.unit_id, reason=reason.strip(),
        placed_by=actor, placed_at=now, placed_signature=signature,
    )
    hold.crates.set(crates)
    Crate.objects.filter(id__in=[c.id for c in crates]).update(on_hold=True, version=F("version") + 1, updated_at=now)
    changes = [_hold_change(hold, "created", actor)]
    entries = [Entry(
        unit_id=hold.unit_id, entity=ENTITY, record_id=hold.id, record_number=hold.hold_number, action="placed",
        changes={"crates": [None, sorted(c.crate_number for c in crates)]}, reason=hold.reason, version=1,
        change=changes[0], signature_id=signature.id,
    )]
    for crate in crates:
        was = crate.on_hold
        crate.on_hold, crate.version, crate.updated_at = True, crate.version + 1, now
        change = crate_change(crate, "updated", actor=actor)
        changes.append(change)
        entry = crate_entry(
            crate, "hold_placed", {"on_hold": [was, True]}, change=change, reason=f"{hold.hold_number}: {hold.reason}",
        )
        entry.signature_id = signature.id
        entries.append(entry)
    signature_apply(signature, [Binding(ENTITY, hold.id, hold.hold_number, 1, hold_content(hold, [c.id for c in crates]))])
    journal_write(actor=actor, changes=changes, entries=entries)
    return hold


def hold_for_update(actor: User, hold_id: uuid.UUID) -> Hold:
    hold = Hold.objects.select_for_update().filter(id=hold_id).first()
    if hold is None or not in_scope(actor, hold.unit_id):
        raise NotFound("No such legal hold.")
    return hold


def hold_release_check(*, actor: User, hold: Hold, reason: str) -> None:
    """What refuses a release before a signature is asked for."""
    if not in_scope(actor, hold.unit_id):
        raise NotFound("No such legal hold.")
    hold_precheck(actor=actor, reason=reason)
    if hold.released_at is not None:
        raise InvalidTransition(f"{hold} was released on {hold.released_at:%Y-%m-%d}.", details={"status": "released"})


@transaction.atomic
def hold_release(*, actor: User, hold_id: uuid.UUID, reason: str, signature: Signature) -> Hold:
    """Release a hold, signed (meaning `released`). Its crates stay `on_hold` while another hold
    that is not released names them."""
    hold = hold_for_update(actor, hold_id)
    hold_release_check(actor=actor, hold=hold, reason=reason)
    _signed(signature, actor, "released")
    crate_ids = sorted(hold.crates.values_list("id", flat=True), key=str)
    crates = list(Crate.objects.select_for_update().filter(id__in=crate_ids).order_by("id"))
    still = set(
        Hold.crates.through.objects.filter(
            crate_id__in=crate_ids, legalhold__released_at__isnull=True
        ).exclude(legalhold_id=hold.id).values_list("crate_id", flat=True)
    )
    now = timezone.now()
    hold.released_at, hold.released_by, hold.release_reason = now, actor, reason.strip()
    hold.released_signature, hold.version = signature, hold.version + 1
    hold.save(update_fields=["released_at", "released_by", "release_reason", "released_signature", "version"])
    freed = [c for c in crates if c.id not in still and c.on_hold]
    Crate.objects.filter(id__in=[c.id for c in freed]).update(on_hold=False, version=F("version") + 1, updated_at=now)
    changes = [_hold_change(hold, "updated", actor)]
    entries = [Entry(
        unit_id=hold.unit_id, entity=ENTITY, record_id=hold.id, record_number=hold.hold_number, action="released",
        changes={"released": [False, True]}, reason=hold.release_reason, version=hold.version,
        change=changes[0], signature_id=signature.id,
    )]
    for crate in freed:
        crate.on_hold, crate.version, crate.updated_at = False, crate.version + 1, now
        change = crate_change(crate, "updated", actor=actor)
        changes.append(change)
        entry = crate_entry(
            crate, "hold_released", {"on_hold": [True, False]}, change=change,
            reason=f"{hold.hold_number}: {hold.release_reason}",
        )
        entry.signature_id = signature.id
        entries.append(entry)
    signature_apply(signature, [Binding(ENTITY, hold.id, hold.hold_number, hold.version, hold_content(hold, crate_ids))])
    journal_write(actor=actor, changes=changes, entries=entries)
    return hold

