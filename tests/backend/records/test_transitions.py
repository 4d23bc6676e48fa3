"""The request lifecycle, exhaustively: every action on every kind, from every status, by every role.

The expected rules are written out here on their own (not read from the services' table), so a
change to who may do what fails a test instead of silently redefining the answer.
"""

from __future__ import annotations

from functools import cached_property

import pytest

from backend.common.errors import (
    CrateUnavailable,
    InvalidTransition,
    NotFound,
    RoleRequired,
    StaleVersion,
    ValidationFailed,
)
from backend.records import services
from backend.records.models import Crate, CrateStatus, RequestStatus, SendBackRecord
from tests.support.db import events, last_seq, make_superuser, request_snapshot, seqs
from tests.support.factories import CrateFactory, UnitFactory, unit_staff
from tests.support.signing import sign

pytestmark = pytest.mark.django_db

KINDS = ("withdrawal", "destruction", "transfer")
ROLES = ("requester", "approver", "store", "admin", "superuser")
STATUSES = tuple(RequestStatus.values)
DECIDERS = {"approver", "admin", "superuser"}
# action -> (the one status it applies to, the status it leads to, who may do it)
RULES = {
    "approve": (RequestStatus.PENDING, RequestStatus.APPROVED, DECIDERS),
    "reject": (RequestStatus.PENDING, RequestStatus.REJECTED, DECIDERS),
    "send_back": (RequestStatus.PENDING, RequestStatus.SENT_BACK, DECIDERS),
    "resubmit": (RequestStatus.SENT_BACK, RequestStatus.PENDING, {"requester", "admin", "superuser"}),
}
# How the scene reaches each starting status.
PATHS = {
    RequestStatus.PENDING: [],
    RequestStatus.APPROVED: ["approve"],
    RequestStatus.REJECTED: ["reject"],
    RequestStatus.SENT_BACK: ["send_back"],
}
CRATE_AFTER_APPROVAL = {"withdrawal": CrateStatus.WITHDRAWN, "destruction": CrateStatus.DESTROYED}

MATRIX = [(k, a, r, s) for k in KINDS for a in RULES for r in ROLES for s in STATUSES]
ALLOWED = [(k, a, r, s) for k, a, r, s in MATRIX if r in RULES[a][2] and s == RULES[a][0]]
FORBIDDEN = [
    (k, a, r, s, InvalidTransition if r in RULES[a][2] else RoleRequired)
    for k, a, r, s in MATRIX
    if (k, a, r, s) not in ALLOWED
]


def _id(case) -> str:
    kind, action, role, status = case[:4]
    return f"{kind}-{action}-by-{role}-from-{status}"


def test_the_matrix_is_complete():
    # 3 kinds x 4 actions x 5 roles x 4 statuses; allowed: 3 roles x 4 actions x 3 kinds.
    assert len(MATRIX) == 240 and len(ALLOWED) == 36 and len(FORBIDDEN) == 204


class Scene:
    """A unit with one user per role, a destination unit (with its own staff) and a superuser."""

    def __init__(self):
        self.unit = UnitFactory()
        self.destination = UnitFactory()
        self.staff = unit_staff(self.unit)
        self.staff["superuser"] = make_superuser()

    @cached_property
    def destination_staff(self):
        return unit_staff(self.destination)

    def request(self, kind: str, status: str = RequestStatus.PENDING):
        crates = [CrateFactory(unit=self.unit), CrateFactory(unit=self.unit)]
        extra = {"destination_unit_id": self.destination.id} if kind == "transfer" else {}
        request = services.request_create(
            entity=kind, actor=self.staff["requester"], crate_ids=[c.id for c in crates], reason="files", **extra
        )
        for action in PATHS[status]:
            request = services.request_transition(
                entity=kind, action=action, actor=self.staff["approver"], request_id=request.id, reason="scene",
                expected_version=request.version,
                signature_id=sign(self.staff["approver"], kind, action, unit_id=request.unit_id),
            )
        assert request.status == status
        return request


@pytest.fixture
def scene():
    return Scene()


def _crate_data(crate: Crate, status: str, by) -> dict:
    return {"id": str(crate.id), "status": status, "crate_number": crate.crate_number, "actor": by.username}


@pytest.mark.parametrize("kind,action,role,status", ALLOWED, ids=[_id(c) for c in ALLOWED])
def test_allowed_transition_applies_all_its_effects(scene, kind, action, role, status):
    # given a request in `status` and the counters of both units
    request = scene.request(kind, status)
    actor = scene.staff[role]
    crates = sorted(request.crates.all(), key=lambda c: str(c.id))
    crate_versions = {c.id: c.version for c in crates}
    seq_before = last_seq(scene.unit)
    destination_seq_before = last_seq(scene.destination)
    sendbacks_before = SendBackRecord.objects.count()
    decision_before = request.decision_reason
    reason = "  Shelf mark unreadable  " if action in ("reject", "send_back") else ""

    # when the actor applies the action, naming the version it saw
    result = services.request_transition(
        entity=kind, action=action, actor=actor, request_id=request.id, reason=reason,
        expected_version=request.version, signature_id=sign(actor, kind, action, unit_id=request.unit_id),
    )

    # then the request moved, once
    target = RULES[action][1]
    request.refresh_from_db()
    assert result.status == request.status == target
    assert request.version == result.version == 2 + len(PATHS[status])
    # and the decision is on the request (who, when, why); a resubmit leaves it undecided again
    if action == "resubmit":
        assert (request.decided_by, request.decided_at, request.decision_reason) == (None, None, "")
        assert decision_before == "scene"  # (the send-back's reason it had until now)
    else:
        assert (request.decided_by, request.decision_reason) == (actor, reason.strip())
        assert request.decided_at == request.updated_at

    # and the crates changed only on approval: withdrawn / destroyed / moved to the destination
    after = {c.id: c for c in Crate.objects.filter(id__in=crate_versions)}
    for crate in crates:
        now = after[crate.id]
        if action == "approve" and kind == "transfer":
            assert (now.unit_id, now.status, now.version) == (scene.destination.id, CrateStatus.IN_STORAGE, 2)
        elif action == "approve":
            assert (now.unit_id, now.status, now.version) == (scene.unit.id, CRATE_AFTER_APPROVAL[kind], 2)
        else:
            assert (now.unit_id, now.status, now.version) == (scene.unit.id, CrateStatus.IN_STORAGE, 1)

    # and a send-back left its record
    new_records = list(SendBackRecord.objects.order_by("created_at")[sendbacks_before:])
    if action == "send_back":
        assert len(new_records) == 1
        record = new_records[0]
        assert (record.unit_id, record.entity, record.request_id, record.reason, record.created_by_id) == (
            scene.unit.id, kind, request.id, "Shelf mark unreadable", actor.id,
        )
    else:
        assert new_records == []

    # and the outbox holds exactly these events, with consecutive seqs per unit
    request_data = {
        "id": str(request.id), "status": target, "request_number": request.request_number, "actor": actor.username,
    }
    source = [(kind, "updated", request_data)]
    destination = [(kind, "updated", request_data)] if kind == "transfer" else []
    if action == "approve" and kind == "transfer":
        source += [("crate", "deleted", _crate_data(c, CrateStatus.IN_STORAGE, actor)) for c in crates]
        destination += [("crate", "created", _crate_data(c, CrateStatus.IN_STORAGE, actor)) for c in crates]
    elif action == "approve":
        source += [("crate", "updated", _crate_data(c, CRATE_AFTER_APPROVAL[kind], actor)) for c in crates]
    if action == "send_back":
        source.append(("sendback", "created", {
            "id": str(record.id), "status": RequestStatus.SENT_BACK, "request_id": str(request.id),
            "request_number": request.request_number, "request_entity": kind, "actor": actor.username,
        }))
    assert events(scene.unit, seq_before) == source
    assert last_seq(scene.unit) == seq_before + len(source)
    assert events(scene.destination, destination_seq_before) == destination
    assert last_seq(scene.destination) == destination_seq_before + len(destination)
    assert seqs(scene.unit, seq_before) == list(range(seq_before + 1, seq_before + 1 + len(source)))
    assert seqs(scene.destination, destination_seq_before) == list(
        range(destination_seq_before + 1, destination_seq_before + 1 + len(destination))
    )


@pytest.mark.parametrize("kind,action,role,status,error", FORBIDDEN, ids=[_id(c) for c in FORBIDDEN])
def test_forbidden_transition_is_refused_and_changes_nothing(scene, kind, action, role, status, error):
    # given a request in `status`
    request = scene.request(kind, status)
    before = request_snapshot(request)

    # when someone not allowed to (or from a status it does not apply to) tries the action
    with pytest.raises(error) as refused:
        services.request_transition(
            entity=kind, action=action, actor=scene.staff[role], request_id=request.id, reason="because",
            expected_version=request.version, signature_id=sign(scene.staff[role], kind, action, unit_id=request.unit_id),
        )

    # then it is refused with its code, and nothing changed anywhere
    assert type(refused.value) is error
    assert refused.value.code == ("invalid_transition" if error is InvalidTransition else "permission_denied")
    assert request_snapshot(request) == before


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("action", ["reject", "send_back"])
@pytest.mark.parametrize("reason", ["", "   \n"])
def test_reject_and_send_back_need_a_reason(scene, kind, action, reason):
    # given a pending request
    request = scene.request(kind)
    before = request_snapshot(request)

    # when the approver decides without saying why
    with pytest.raises(ValidationFailed) as refused:
        services.request_transition(
            entity=kind, action=action, actor=scene.staff["approver"], request_id=request.id, reason=reason,
                signature_id=sign(scene.staff["approver"], kind, action, unit_id=request.unit_id)
        )

    # then it is refused as reason_required and nothing changed
    assert refused.value.code == "reason_required"
    assert request_snapshot(request) == before


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("action", list(RULES))
def test_a_stale_version_is_refused_and_changes_nothing(scene, kind, action):
    # given a request the actor last saw at version 1, since changed (it is now at the action's source)
    source = RULES[action][0]
    request = scene.request(kind, source)
    if source == RequestStatus.PENDING:
        request = services.request_update(change_reason="edited in a test",
            entity=kind, actor=scene.staff["requester"], request_id=request.id, expected_version=1, reason="edited"
        )
    before = request_snapshot(request)
    actor = scene.staff["admin"]

    # when the actor sends the version it saw
    with pytest.raises(StaleVersion) as refused:
        services.request_transition(
            entity=kind, action=action, actor=actor, request_id=request.id, reason="why", expected_version=1,
                signature_id=sign(actor, kind, action, unit_id=request.unit_id)
        )

    # then it is refused as stale, with the current version, and nothing changed
    assert refused.value.code == "stale_version"
    assert refused.value.details == {"current_version": 2}
    assert request_snapshot(request) == before


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("action", list(RULES))
def test_another_units_request_does_not_exist_for_the_actor(scene, kind, action):
    # given a request of a third unit (not the transfer's destination either)
    request = scene.request(kind, RULES[action][0])
    before = request_snapshot(request)
    stranger = unit_staff(UnitFactory())["admin"]

    # when an admin of another unit tries any action
    with pytest.raises(NotFound) as refused:
        services.request_transition(entity=kind, action=action, actor=stranger, request_id=request.id, reason="x",
            signature_id=sign(stranger, kind, action, unit_id=request.unit_id))

    # then the request is simply not found, and nothing changed
    assert refused.value.code == "not_found"
    assert request_snapshot(request) == before


@pytest.mark.parametrize("action", list(RULES))
def test_a_transfers_destination_can_read_it_but_not_decide_it(scene, action):
    # given a transfer addressed to the destination unit, in the action's source status
    request = scene.request("transfer", RULES[action][0])
    before = request_snapshot(request)

    # when the destination's admin tries the action
    with pytest.raises(RoleRequired) as refused:
        services.request_transition(
            entity="transfer", action=action, actor=scene.destination_staff["admin"], request_id=request.id,
            reason="x", signature_id=sign(scene.destination_staff["admin"], "transfer", action, unit_id=request.unit_id),
        )

    # then it is a permission refusal (403, the transfer is visible to it), and nothing changed
    assert refused.value.code == "permission_denied"
    assert request_snapshot(request) == before


@pytest.mark.parametrize("kind", ["withdrawal", "destruction", "transfer"])
def test_approval_never_half_applies_when_a_crate_left_storage(scene, kind):
    # given a pending request whose second crate was meanwhile taken out of storage
    request = scene.request(kind)
    crates = sorted(request.crates.all(), key=lambda c: str(c.id))
    Crate.objects.filter(id=crates[1].id).update(status=CrateStatus.IN_TRANSIT)
    before = request_snapshot(request)

    # when the approver approves
    with pytest.raises(CrateUnavailable) as refused:
        services.request_transition(
            entity=kind, action="approve", actor=scene.staff["approver"], request_id=request.id,
            expected_version=request.version,
            signature_id=sign(scene.staff["approver"], kind, "approve", unit_id=request.unit_id),
        )

    # then nothing was applied: not the request, not the first crate, no event
    assert refused.value.code == "crate_unavailable"
    assert refused.value.details == {"crates": [crates[1].crate_number]}
    assert request_snapshot(request) == before


def test_an_unknown_action_is_invalid(scene):
    request = scene.request("withdrawal")
    with pytest.raises(ValidationFailed) as refused:
        services.request_transition(entity="withdrawal", action="archive", actor=scene.staff["admin"], request_id=request.id,
            signature_id=sign(scene.staff["admin"], "withdrawal", "archive", unit_id=request.unit_id))
    assert refused.value.code == "unknown_action"

