"""Unit isolation over HTTP: another unit's objects do not exist for you. Every endpoint answers a
plain 404 `not_found` (never 403, never data) and changes nothing; lists never contain them.

A transfer is the one object two units share: its destination unit can read it (GET, lists) but
only the filing unit may change or decide it. The destination is refused with 403
`permission_denied`, not 404: it can read the transfer at the same URL, so "not found" would be a
contradiction rather than a secret kept.
"""

from __future__ import annotations

import json

import pytest

from backend.events.models import OutboxEvent
from backend.jobs import registry
from backend.jobs.models import Job
from backend.jobs.services import job_submit
from backend.records.models import Crate, DestructionRequest, SendBackRecord, TransferRequest, WithdrawalRequest
from tests.support.factories import CrateFactory, UnitFactory, make_request, unit_staff
from tests.support.signing import sign, signed, transition_now

pytestmark = pytest.mark.django_db

KINDS = {"withdrawal": "withdrawal-requests", "destruction": "destruction-requests", "transfer": "transfer-requests"}


class World:
    """`home` (the caller's unit) and `other`, whose objects the caller must never reach. `other`
    has one object of every kind, each in a status where every action would otherwise apply."""

    def __init__(self, enqueued):
        self.home, self.other, self.third = UnitFactory(code="home"), UnitFactory(code="other"), UnitFactory(code="third")
        self.me = unit_staff(self.home)
        staff = unit_staff(self.other)
        self.crate = CrateFactory(unit=self.other)
        self.requests, self.sent_back = {}, {}
        for kind in KINDS:
            extra = {"destination_unit_id": self.third.id} if kind == "transfer" else {}
            self.requests[kind] = make_request(kind, staff["requester"], **extra)
            self.sent_back[kind] = make_request(kind, staff["requester"], **extra)
            transition_now(
                entity=kind, action="send_back", actor=staff["approver"], request_id=self.sent_back[kind].id, reason="r",
                    signature_id=sign(staff["approver"], kind, "send_back")
            )
        self.sendback = SendBackRecord.objects.get(request_id=self.sent_back["withdrawal"].id)
        self.job = job_submit(
            actor=staff["approver"], kind=registry.get("withdrawal.approve"), targets=[self.requests["withdrawal"].id]
        )

    def endpoint(self, name: str) -> tuple[str, str, dict | None]:
        """(method, path, body) of an endpoint, aimed at `other`'s object."""
        resource, _, verb = name.partition(":")
        if resource == "crate":
            path = f"/api/crates/{self.crate.id}/"
            body = {"location": "Moved", "version": 1}
            return {
                "retrieve": ("get", path, None),
                "update": ("put", path, body),
                "partial_update": ("patch", path, body),
                "destroy": ("delete", path, None),
                "relocate": ("post", f"{path}relocate/", body),
            }[verb]
        if resource == "sendback":
            return "get", f"/api/sendback-records/{self.sendback.id}/", None
        if resource == "job":
            return "get", f"/api/jobs/{self.job.id}/", None
        request = self.sent_back[resource] if verb == "resubmit" else self.requests[resource]
        path = f"/api/{KINDS[resource]}/{request.id}/"
        body = {"crates": [str(c.id) for c in request.crates.all()], "reason": "mine now", "version": request.version}
        if resource == "transfer":
            body["destination_unit"] = str(self.home.id)
        return {
            "retrieve": ("get", path, None),
            "update": ("put", path, body),
            "partial_update": ("patch", path, body),
            "destroy": ("delete", path, None),
            "approve": ("post", f"{path}approve/", signed("approve")),
            "reject": ("post", f"{path}reject/", signed("reject", {"reason": "no"})),
            "send-back": ("post", f"{path}send-back/", signed("send-back", {"reason": "no"})),
            "resubmit": ("post", f"{path}resubmit/", {}),
        }[verb]

    def state(self) -> dict:
        """Everything a refused call must leave as it was."""
        return {
            "crate": Crate.objects.filter(id=self.crate.id).values_list("location", "version", "status").first(),
            "requests": sorted(
                (str(r.id), r.status, r.version, r.reason)
                for model in (WithdrawalRequest, DestructionRequest, TransferRequest)
                for r in model.objects.all()
            ),
            "outbox": OutboxEvent.objects.count(),
            "jobs": Job.objects.count(),
            "sendbacks": SendBackRecord.objects.count(),
        }

    def secrets(self) -> list[str]:
        """Strings of `other` that must never appear in an answer to `home` (request numbers are
        per unit, so `home` may well have its own WR-...-0001: ids and crate numbers are unique)."""
        values = [str(self.crate.id), self.crate.crate_number, str(self.other.id), str(self.job.id)]
        return values + [str(r.id) for r in [*self.requests.values(), *self.sent_back.values()]]


@pytest.fixture
def world(enqueued):
    return World(enqueued)


ENDPOINTS = [
    *[f"crate:{verb}" for verb in ("retrieve", "update", "partial_update", "destroy", "relocate")],
    *[
        f"{kind}:{verb}"
        for kind in KINDS
        for verb in ("retrieve", "update", "partial_update", "destroy", "approve", "reject", "send-back", "resubmit")
    ],
    "sendback:retrieve",
    "job:retrieve",
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_another_units_object_is_a_plain_404_on_every_endpoint(api, world, endpoint):
    # given an admin of `home` (every role, so a refusal cannot be about the role)
    client = api(world.me["admin"])
    method, path, body = world.endpoint(endpoint)
    before = world.state()

    # when it calls the endpoint on `other`'s object
    response = getattr(client, method)(path, body, format="json") if body is not None else getattr(client, method)(path)

    # then the object simply does not exist, nothing about it leaks, and nothing changed
    assert response.status_code == 404, response.content
    assert response.json() == {"code": "not_found", "message": response.json()["message"]}
    text = response.content.decode()
    assert not [s for s in world.secrets() if s in text]
    assert world.state() == before


LISTS = ["crates", *KINDS.values(), "sendback-records", "jobs"]


@pytest.mark.parametrize("resource", LISTS)
def test_lists_never_contain_another_units_objects(api, world, resource):
    # given `home` has an object of its own in the list (so the list is not trivially empty)
    mine = {
        "crates": lambda: CrateFactory(unit=world.home).id,
        "withdrawal-requests": lambda: make_request("withdrawal", world.me["requester"]).id,
        "destruction-requests": lambda: make_request("destruction", world.me["requester"]).id,
        "transfer-requests": lambda: make_request("transfer", world.me["requester"]).id,
        "sendback-records": lambda: _sent_back_record(world.me),
        "jobs": lambda: job_submit(
            actor=world.me["admin"], kind=registry.get("crate.relocate"), targets=[CrateFactory(unit=world.home).id]
        ).id,
    }[resource]()

    # when its admin lists the resource
    response = api(world.me["admin"]).get(f"/api/{resource}/")

    # then it sees its own object and nothing of `other`
    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [str(mine)]
    assert not [s for s in world.secrets() if s in response.content.decode()]


def _sent_back_record(staff):
    request = make_request("withdrawal", staff["requester"])
    transition_now(
        entity="withdrawal", action="send_back", actor=staff["approver"], request_id=request.id, reason="r",
            signature_id=sign(staff["approver"], "withdrawal", "send_back")
    )
    return SendBackRecord.objects.get(request_id=request.id).id


def test_a_superuser_sees_every_unit(api, world):
    # the other side of the coin: the same lists do hold `other`'s objects for a superuser
    from tests.support.db import make_superuser

    root = api(make_superuser())
    assert str(world.crate.id) in {row["id"] for row in root.get("/api/crates/").json()["results"]}
    assert root.get(f"/api/jobs/{world.job.id}/").status_code == 200


# --- the transfer's destination -----------------------------------------------------------------


@pytest.fixture
def addressed(enqueued):
    """A pending and a sent-back transfer from `source` to `destination`, and both units' staff."""
    source, destination = UnitFactory(code="source"), UnitFactory(code="destination")
    staff, their = unit_staff(source), unit_staff(destination)
    pending = make_request("transfer", staff["requester"], destination_unit_id=destination.id)
    sent_back = make_request("transfer", staff["requester"], destination_unit_id=destination.id)
    transition_now(
        entity="transfer", action="send_back", actor=staff["approver"], request_id=sent_back.id, reason="r",
            signature_id=sign(staff["approver"], "transfer", "send_back")
    )
    return {"pending": pending, "sent_back": sent_back, "their": their, "destination": destination}


def test_a_transfers_destination_can_read_it(api, addressed):
    client = api(addressed["their"]["requester"])
    transfer = addressed["pending"]
    detail = client.get(f"/api/transfer-requests/{transfer.id}/")
    assert detail.status_code == 200
    assert (detail.json()["id"], detail.json()["destination_unit"]) == (str(transfer.id), str(addressed["destination"].id))
    listed = {row["id"] for row in client.get("/api/transfer-requests/").json()["results"]}
    assert listed == {str(transfer.id), str(addressed["sent_back"].id)}


@pytest.mark.parametrize(
    "verb,role",
    [
        ("approve", "approver"), ("reject", "approver"), ("send-back", "approver"), ("resubmit", "requester"),
        ("update", "requester"), ("partial_update", "requester"), ("destroy", "requester"),
    ],
)
def test_a_transfers_destination_cannot_change_or_decide_it(api, addressed, verb, role):
    # given the destination unit's user with the role the verb would need
    transfer = addressed["sent_back"] if verb == "resubmit" else addressed["pending"]
    path = f"/api/transfer-requests/{transfer.id}/"
    client = api(addressed["their"][role])
    before = (TransferRequest.objects.filter(id=transfer.id).values_list("status", "version", "reason").get(),
              OutboxEvent.objects.count(), Job.objects.count())
    body = {"reason": "ours", "crates": [str(c.id) for c in transfer.crates.all()], "destination_unit": str(transfer.unit_id)}

    # when it tries
    if verb in ("approve", "reject", "send-back", "resubmit"):
        response = client.post(f"{path}{verb}/", signed(verb, {"reason": "no"}), format="json")
    elif verb == "destroy":
        response = client.delete(path)
    else:
        response = getattr(client, "put" if verb == "update" else "patch")(path, body, format="json")

    # then it is refused as a permission matter (it can see the transfer), and nothing changed
    assert response.status_code == 403, response.content
    assert response.json()["code"] == "permission_denied"
    after = (TransferRequest.objects.filter(id=transfer.id).values_list("status", "version", "reason").get(),
             OutboxEvent.objects.count(), Job.objects.count())
    assert after == before


def test_a_404_body_is_the_same_for_a_missing_and_a_foreign_object(api, world):
    # the answer for another unit's object is indistinguishable from one that never existed
    client = api(world.me["admin"])
    foreign = client.get(f"/api/withdrawal-requests/{world.requests['withdrawal'].id}/")
    missing = client.get("/api/withdrawal-requests/00000000-0000-4000-8000-000000000000/")
    malformed = client.get("/api/withdrawal-requests/not-a-uuid/")
    assert foreign.status_code == missing.status_code == malformed.status_code == 404
    assert json.loads(foreign.content) == json.loads(missing.content) == json.loads(malformed.content)
