"""Who may write what, over HTTP, within their own unit: a refused role is a 403 `permission_denied`
that changes nothing; an allowed one gets its normal answer."""

from __future__ import annotations

import pytest

from backend.events.models import OutboxEvent
from backend.jobs.models import Job
from backend.records.models import Crate
from tests.support.db import make_superuser
from tests.support.factories import CrateFactory, UnitFactory, make_request, unit_staff
from tests.support.signing import sign, signed, transition_now

pytestmark = pytest.mark.django_db

ROLES = ("requester", "approver", "store", "admin", "qa", "superuser")
KINDS = {"withdrawal": "withdrawal-requests", "destruction": "destruction-requests", "transfer": "transfer-requests"}


def _expect(allowed: set[str], ok: int, superuser: int | None = None) -> dict[str, int]:
    answers = {role: (ok if role in allowed else 403) for role in ROLES}
    answers["superuser"] = superuser or ok
    return answers


CRATE_RULES = {
    "create": _expect({"store", "admin"}, 201, superuser=400),  # a superuser has no unit to put it in
    "update": _expect({"store", "admin"}, 200),
    "partial_update": _expect({"store", "admin"}, 200),
    "destroy": _expect({"store", "admin"}, 204),
    "relocate": _expect({"store", "admin"}, 202),
}
REQUEST_RULES = {
    "create": _expect({"requester", "admin"}, 201, superuser=400),
    "update": _expect({"requester", "admin"}, 200),
    "partial_update": _expect({"requester", "admin"}, 200),
    "destroy": _expect({"requester", "admin"}, 204),
    "approve": _expect({"approver", "admin"}, 202),
    "reject": _expect({"approver", "admin"}, 202),
    "send-back": _expect({"approver", "admin"}, 202),
    "resubmit": _expect({"requester", "admin"}, 202),
}


@pytest.fixture
def unit(enqueued):
    unit = UnitFactory(code="own")
    staff = unit_staff(unit)
    staff["superuser"] = make_superuser()
    return unit, staff


def _state():
    return (
        OutboxEvent.objects.count(),
        Job.objects.count(),
        sorted(Crate.objects.values_list("id", "version", "location")),
    )


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("verb", list(CRATE_RULES))
def test_crate_writes_by_role(api, unit, verb, role):
    # given a crate of the caller's unit
    unit, staff = unit
    crate = CrateFactory(unit=unit)
    path = f"/api/crates/{crate.id}/"
    client = api(staff[role])
    before = _state()

    # when the caller writes
    response = {
        "create": lambda: client.post("/api/crates/", {"location": "Aisle 7"}, format="json"),
        "update": lambda: client.put(path, {"location": "Aisle 7"}, format="json"),
        "partial_update": lambda: client.patch(path, {"location": "Aisle 7"}, format="json"),
        "destroy": lambda: client.delete(path, {"reason": "never used"}, format="json"),
        "relocate": lambda: client.post(f"{path}relocate/", {"location": "Aisle 7"}, format="json"),
    }[verb]()

    # then the role decides, and a refusal changes nothing
    expected = CRATE_RULES[verb][role]
    assert response.status_code == expected, response.content
    if expected == 403:
        assert response.json()["code"] == "permission_denied"
        assert _state() == before
    if expected == 400:
        assert response.json()["code"] == "unit_required"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("verb", list(REQUEST_RULES))
@pytest.mark.parametrize("kind", list(KINDS))
def test_request_writes_by_role(api, unit, kind, verb, role):
    # given a request of the caller's unit, in the status the verb applies to
    unit, staff = unit
    destination = UnitFactory(code="elsewhere")
    extra = {"destination_unit_id": destination.id} if kind == "transfer" else {}
    request = make_request(kind, staff["requester"], **extra)
    if verb == "resubmit":
        transition_now(entity=kind, action="send_back", actor=staff["approver"], request_id=request.id, reason="r",
            signature_id=sign(staff["approver"], kind, "send_back"))
    path = f"/api/{KINDS[kind]}/{request.id}/"
    body = {"crates": [str(CrateFactory(unit=unit).id)], "reason": "edited", "change_reason": "wrong crate"}
    if kind == "transfer":
        body["destination_unit"] = str(destination.id)
    client = api(staff[role])
    before = _state()

    # when the caller writes
    response = {
        "create": lambda: client.post(f"/api/{KINDS[kind]}/", body, format="json"),
        "update": lambda: client.put(path, body, format="json"),
        "partial_update": lambda: client.patch(path, {"reason": "edited", "change_reason": "typo"}, format="json"),
        "destroy": lambda: client.delete(path, {"reason": "filed twice"}, format="json"),
    }.get(verb, lambda: client.post(f"{path}{verb}/", signed(verb, {"reason": "because"}), format="json"))()

    # then the role decides, and a refusal changes nothing
    expected = REQUEST_RULES[verb][role]
    assert response.status_code == expected, response.content
    if expected == 403:
        assert response.json()["code"] == "permission_denied"
        assert _state() == before
    if expected == 400:
        assert response.json()["code"] == "unit_required"
    if expected == 202:
        job = Job.objects.get(id=response.json()["job"]["id"])
        assert (job.kind, job.requested_by_id, job.unit_id) == (
            f"{kind}.{verb.replace('-', '_')}", staff[role].id, unit.id,
        )
