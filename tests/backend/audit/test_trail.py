"""No path changes a record without its audit entry: every service that writes and every job kind is
walked, and the entries written are compared with the changes made (records whose version moved,
records created), field by field. Also: a rolled-back change leaves no entry, a redelivered task no
second one, and the chain verifies after all of it. Runs on PostgreSQL and on SQLite (make test)."""

from __future__ import annotations

import json
import uuid
from datetime import date

import jsonschema
import pytest
from django.db import transaction

from backend.accounts.models import Unit
from backend.audit.context import origin
from backend.audit.models import AuditEntry, SignedRecord
from backend.audit.selectors import audit_verify
from backend.events import schema
from backend.events.models import OutboxEvent
from backend.jobs import registry
from backend.jobs.models import Job
from backend.jobs.services import job_execute
from backend.records import services
from backend.records.lifecycle import REQUEST_KINDS
from backend.records.models import Crate
from tests.support.factories import CrateFactory, UnitFactory, make_request, unit_staff
from tests.support.signing import MEANINGS, sign, transition_now

pytestmark = pytest.mark.django_db

CLIENT = {"client_ip": "10.1.2.3", "user_agent": "walk/1.0"}
# Services that only check (they write nothing): the view runs them before queueing a job.
CHECKS = {"crate_relocate_check", "request_transition_check", "transition_precheck"}


class World:
    def __init__(self):
        self.unit, self.elsewhere = UnitFactory(code="walk"), UnitFactory(code="far")
        self.staff = unit_staff(self.unit)
        self.colleague = unit_staff(self.unit)["requester"]  # files what the others decide

    def crate(self) -> Crate:
        return CrateFactory(unit=self.unit)

    def request(self, entity: str = "withdrawal", by=None):
        extra = {"destination_unit_id": self.elsewhere.id} if entity == "transfer" else {}
        return make_request(entity, by or self.colleague, [self.crate()], **extra)

    def job(self, kind_name: str, targets: list, params: dict, actor) -> Job:
        job = Job.objects.create(
            kind=kind_name, unit=self.unit, requested_by=actor, targets=[str(t) for t in targets], params=params,
            progress={"total": len(targets), "done": 0, "failed": 0}, **CLIENT,
        )
        return job


@pytest.fixture
def world():
    return World()


def records_state() -> dict:
    """(model, id) -> version, for every crate and request."""
    state = {("crate", c.id): c.version for c in Crate.objects.all()}
    for entity, kind in REQUEST_KINDS.items():
        state.update({(entity, r.id): r.version for r in kind.model.objects.all()})
    return state


def current(entity: str, record_id):
    model = Crate if entity == "crate" else REQUEST_KINDS[entity].model
    return model.objects.get(id=record_id)


def expected_value(record, name: str):
    """A field of a record as the audit trail writes it."""
    if name == "unit":
        return Unit.objects.get(id=record.unit_id).code
    if name == "destination_unit":
        return Unit.objects.get(id=record.destination_unit_id).code
    if name == "crates":
        return sorted(record.crates.values_list("crate_number", flat=True))
    if name == "deleted":
        return record.deleted_at is not None
    value = getattr(record, name)
    return value.isoformat() if isinstance(value, date) else value


def assert_journaled(before: dict, entries_before: set, expect_job: Job | None = None) -> list[AuditEntry]:
    """Every record created or changed since `before` has its entries, at its new version, with the
    new values of what they say changed; no entry names a record that did not change."""
    after = records_state()
    changed = {key: version for key, version in after.items() if before.get(key) != version}
    entries = list(AuditEntry.objects.exclude(id__in=entries_before).order_by("unit_id", "position"))
    assert changed, "the call changed nothing: the walk step is broken"
    by_record = {}
    for entry in entries:
        by_record.setdefault((entry.entity, entry.record_id), []).append(entry)
    assert set(by_record) == set(changed), {"unjournaled": set(changed) - set(by_record), "extra": set(by_record) - set(changed)}
    for (entity, record_id), record_entries in by_record.items():
        record = current(entity, record_id)
        for entry in record_entries:
            assert entry.version == record.version, (entry.action, entity)
            assert entry.record_number in (getattr(record, "crate_number", None), getattr(record, "request_number", None))
            assert entry.changes, (entry.action, entity)
            for name, (old, new) in entry.changes.items():
                assert old != new
                if name != "status" or entry.action not in ("transferred",):
                    assert new == expected_value(record, name), (entity, entry.action, name)
            assert entry.actor_username and entry.actor_id
            assert (entry.client_ip, entry.user_agent) == (CLIENT["client_ip"], CLIENT["user_agent"])
            assert entry.job_id == (expect_job.id if expect_job else None)
            assert entry.seq is not None  # it describes an update clients saw
            # and the activity feed carries it with that update: this entry, without client or hashes
            activity = [json.loads(line) for line in
                        OutboxEvent.objects.get(unit_id=entry.unit_id, seq=entry.seq).activity.splitlines()]
            (frame,) = [f for f in activity if f["entry"]["id"] == str(entry.id)]
            jsonschema.validate(frame, schema.ACTIVITY_SCHEMA)
            assert frame["seq"] == entry.seq and frame["entry"]["action"] == entry.action
            assert not {"client", "hash", "prev_hash"} & set(frame["entry"])
            # a decision is signed by its decider, and the signature is bound to the record as decided
            if entry.action in ("approved", "rejected", "sent_back"):
                assert entry.signature_id, (entity, entry.action)
                signature = entry.signature
                assert (signature.signer_id, signature.meaning) == (entry.actor_id, MEANINGS[signature.action])
                bound = SignedRecord.objects.get(signature=signature, record_id=record_id)
                assert bound.version == record.version
            else:
                assert entry.signature_id is None, (entity, entry.action)
    return entries


# --- the walk ----------------------------------------------------------------------------------


def _service_steps(w: World):
    """name -> (scene, act): `scene()` sets the stage (no audit expected), `act(scene)` is the call."""
    s = w.staff
    entities = list(REQUEST_KINDS)
    decisions = ("approve", "reject", "send_back")

    def decide(pairs):
        for (entity, action), request in pairs.items():
            transition_now(
                entity=entity, action=action, actor=s["approver"], request_id=request.id,
                reason="" if action == "approve" else "illegible", signature_id=sign(s["approver"], entity, action),
            )

    return {
        "crate_create": (lambda: None, lambda _: services.crate_create(
            actor=s["store"], location="Aisle 1", destruction_due=date(2031, 1, 1))),
        "crates_create_bulk": (lambda: None, lambda _: services.crates_create_bulk(actor=s["store"], unit=w.unit, count=3)),
        "crate_update": (w.crate, lambda crate: services.crate_update(
            actor=s["store"], crate_id=crate.id, expected_version=1, location="Aisle 2", change_reason="moved")),
        "crate_relocate": (w.crate, lambda crate: services.crate_relocate(
            actor=s["store"], crate_id=crate.id, location="Vault 1")),
        # The set-based path of relocation jobs (issue 30): in the jobs' transaction, each its own
        # client and job.
        "crates_relocate_batch": (w.crate, lambda crate: _in_transaction(
            lambda: services.crates_relocate_batch([
                registry.Work(job_id=None, actor=s["store"], target=str(crate.id),
                              params={"location": "Vault 3", "reason": "flood"}, **CLIENT)
            ]))),
        "crate_delete": (w.crate, lambda crate: services.crate_delete(
            actor=s["store"], crate_id=crate.id, expected_version=1, reason="empty")),
        "request_create": (
            lambda: {entity: w.crate() for entity in entities},
            lambda crates: [
                services.request_create(
                    entity=entity, actor=w.colleague, crate_ids=[crate.id], reason="audit",
                    destination_unit_id=w.elsewhere.id if entity == "transfer" else None,
                )
                for entity, crate in crates.items()
            ],
        ),
        "requests_create_bulk": (lambda: None, lambda _: [
            services.requests_create_bulk(entity=entity, actor=s["requester"], count=2, reason="bulk") for entity in entities
        ]),
        "request_update": (
            lambda: (w.request("transfer"), w.crate(), UnitFactory()),
            lambda scene: services.request_update(
                entity="transfer", actor=w.colleague, request_id=scene[0].id, expected_version=1, reason="clearer",
                crate_ids=[scene[1].id], destination_unit_id=scene[2].id, change_reason="wrong site",
            ),
        ),
        "request_delete": (w.request, lambda request: services.request_delete(
            entity="withdrawal", actor=w.colleague, request_id=request.id, expected_version=1, reason="twice")),
        "request_transition": (
            lambda: {(entity, action): w.request(entity) for entity in entities for action in decisions}, decide,
        ),
        "requests_transition": (
            lambda: [w.request() for _ in range(3)],
            lambda requests: services.requests_transition(
                entity="withdrawal", action="approve", actor=s["approver"], request_ids=[r.id for r in requests],
                expected_versions={r.id: r.version for r in requests},
                signature_id=sign(s["approver"], "withdrawal", "approve")),
        ),
    }


def _in_transaction(act):
    with transaction.atomic():
        return act()


def test_every_service_that_writes_journals_every_change(world):
    steps = _service_steps(world)
    # the walk covers every service the records package exports (new ones must be added here)
    assert set(steps) == set(services.__all__) - CHECKS
    for name, (scene, act) in steps.items():
        stage = scene()
        before, entries_before = records_state(), set(AuditEntry.objects.values_list("id", flat=True))
        with origin(**CLIENT):
            act(stage)
        assert_journaled(before, entries_before), name
    assert audit_verify().ok


def _job_params(kind, w: World):
    """(targets, params, actor) that make each job kind change something."""
    if kind.name == "crate.relocate":
        return [w.crate().id], {"location": "Vault 9", "reason": "flood"}, w.staff["store"]
    entity, action = kind.name.removeprefix("bulk.").split(".")
    status = {"resubmit": "sent_back"}.get(action, "pending")
    requests = [w.request(entity) for _ in range(2 if kind.bulk else 1)]
    if status == "sent_back":
        for request in requests:
            transition_now(entity=entity, action="send_back", actor=w.staff["approver"],
                                        request_id=request.id, reason="fix it",
                                            signature_id=sign(w.staff["approver"], entity, "send_back"))
    actor = w.colleague if action == "resubmit" else w.staff["approver"]
    reason = "" if action in ("approve", "resubmit") else "illegible"
    params = {"reason": reason}
    if action in MEANINGS:  # what the API puts in a decision's job: its signature (never the password),
        params["signature_id"] = str(sign(actor, entity, action))  # and the versions it was given for
        params["versions"] = {str(r.id): current(entity, r.id).version for r in requests}
    return [r.id for r in requests], params, actor


def test_every_job_kind_journals_every_change_with_its_job_and_its_client(world):
    kinds = registry.kinds()
    assert len(kinds) == 1 + 2 * len(REQUEST_KINDS) * 4  # relocate, and each transition single and bulk
    for kind in kinds:
        targets, params, actor = _job_params(kind, world)
        job = world.job(kind.name, targets, params, actor)
        before, entries_before = records_state(), set(AuditEntry.objects.values_list("id", flat=True))
        finished = job_execute(job_id=str(job.id))
        assert (finished.status, finished.progress["failed"]) == ("succeeded", 0), (kind.name, finished.error, finished.progress)
        assert_journaled(before, entries_before, expect_job=job)
    assert audit_verify().ok


def test_a_redelivered_task_writes_no_second_entry(world):
    request = world.request()
    approver = world.staff["approver"]
    params = {"reason": "", "signature_id": str(sign(approver, "withdrawal", "approve")), "versions": {str(request.id): 1}}
    job = world.job("withdrawal.approve", [request.id], params, approver)
    job_execute(job_id=str(job.id))
    entries = AuditEntry.objects.count()

    again = job_execute(job_id=str(job.id))  # the broker delivered the task twice

    assert again.status == "succeeded"
    assert AuditEntry.objects.count() == entries
    assert AuditEntry.objects.filter(record_id=request.id, action="approved").count() == 1


def test_a_rolled_back_change_leaves_no_entry_and_no_event(world):
    entries, events = AuditEntry.objects.count(), OutboxEvent.objects.count()

    with pytest.raises(RuntimeError), transaction.atomic():
        services.crate_create(actor=world.staff["store"])
        transition_now(entity="withdrawal", action="approve", actor=world.staff["approver"],
                                    request_id=world.request().id,
                                        signature_id=sign(world.staff["approver"], "withdrawal", "approve"))
        raise RuntimeError("the caller's transaction fails after the services ran")

    assert (AuditEntry.objects.count(), OutboxEvent.objects.count()) == (entries, events)


def test_a_refused_change_leaves_no_change_entry_only_the_signatures_non_application(world):
    own = world.request(by=world.staff["admin"])  # the admin may file, and may not decide on it (four eyes)
    entries = set(AuditEntry.objects.values_list("id", flat=True))
    signature_id = sign(world.staff["admin"], "withdrawal", "approve")
    outcomes = services.requests_transition(
        entity="withdrawal", action="approve", actor=world.staff["admin"], request_ids=[own.id, uuid.uuid4()],
        expected_versions={own.id: 1}, signature_id=signature_id,
    )
    assert sorted(o.code for o in outcomes.values()) == ["four_eyes", "not_found"]
    # nothing changed, and the trail says the signature was not applied to the request it names (only)
    (entry,) = AuditEntry.objects.exclude(id__in=entries)
    assert (entry.record_id, entry.action, entry.signature_id, entry.changes) == (
        own.id, "signature_not_applied", signature_id, {},
    )
    assert entry.reason.startswith("four_eyes: ")
    assert current("withdrawal", own.id).version == 1
