"""The `qa` role and printed names: whoever can sign (approvers, admins, QA) has a full name, required
when the account is made or given a signing role, and a signature without one is refused (Part 11
§11.50(a)(1): a signature manifests the printed name of its signer)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from backend.accounts.models import Role, User
from backend.accounts.services import user_create_check, user_update_access
from backend.audit.models import AuditEntry, Signature
from backend.common.errors import ValidationFailed
from tests.support.factories import UnitFactory, UserFactory, make_request
from tests.support.signing import signed

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("role", [Role.APPROVER, Role.ADMIN, Role.QA])
def test_a_signing_account_without_a_printed_name_is_refused(role):
    unit = UnitFactory()
    nameless = User(username=f"nameless-{role}", unit=unit, role=role)
    nameless.set_unusable_password()
    # the model's validation (the admin site's forms run it) refuses it
    with pytest.raises(ValidationError) as refused:
        nameless.full_clean()
    assert "first_name" in refused.value.message_dict
    # and so does the check the admin site runs before it saves a new account
    with pytest.raises(ValidationFailed) as refused_service:
        user_create_check(nameless)
    assert refused_service.value.code == "printed_name_required"


def test_a_requester_needs_no_printed_name_but_becoming_a_signer_does():
    unit = UnitFactory()
    requester = UserFactory(unit=unit, role=Role.REQUESTER, first_name="", last_name="")
    requester.full_clean()  # no signature, no name needed
    with pytest.raises(ValidationFailed) as refused:
        user_update_access(user=requester, role=Role.QA)
    assert refused.value.code == "printed_name_required"
    assert User.objects.get(id=requester.id).role == Role.REQUESTER


def test_a_signature_without_a_printed_name_is_refused_before_the_password_is_checked(api, enqueued):
    unit = UnitFactory()
    requester = UserFactory(unit=unit, role=Role.REQUESTER)
    request = make_request("withdrawal", requester)
    approver = UserFactory(unit=unit, role=Role.APPROVER)
    User.objects.filter(id=approver.id).update(first_name="", last_name="")  # made before names were required

    response = api(approver).post(f"/api/withdrawal-requests/{request.id}/approve/", signed("approve"), format="json")

    assert response.status_code == 400, response.content
    assert response.json()["code"] == "printed_name_required"
    assert not Signature.objects.exists()
    assert not AuditEntry.objects.filter(action="signature_failed").exists()  # not a wrong password
    assert enqueued == []


def test_a_signature_manifests_the_printed_name(api, enqueued):
    unit = UnitFactory()
    request = make_request("withdrawal", UserFactory(unit=unit, role=Role.REQUESTER))
    approver = UserFactory(unit=unit, role=Role.APPROVER, first_name="Grace", last_name="Hopper")

    response = api(approver).post(f"/api/withdrawal-requests/{request.id}/approve/", signed("approve"), format="json")

    assert response.status_code == 202, response.content
    assert Signature.objects.get().signer_full_name == "Grace Hopper"


@pytest.mark.parametrize("kind", ["withdrawal-requests", "destruction-requests"])
def test_qa_files_and_decides_nothing_but_reads_the_trail(api, enqueued, kind):
    unit = UnitFactory()
    qa = UserFactory(unit=unit, role=Role.QA)
    request = make_request(kind.split("-")[0], UserFactory(unit=unit, role=Role.REQUESTER))
    client = api(qa)

    filed = client.post(f"/api/{kind}/", {"crates": [str(request.crates.get().id)], "reason": "x"}, format="json")
    decided = client.post(f"/api/{kind}/{request.id}/approve/", signed("approve"), format="json")
    trail = client.get("/api/audit-trail/")
    checkpoints = client.get("/api/audit-trail/checkpoints/")

    assert (filed.status_code, decided.status_code) == (403, 403)
    assert not Signature.objects.exists()
    assert trail.status_code == 200 and trail.json()["results"]
    assert checkpoints.status_code == 200
