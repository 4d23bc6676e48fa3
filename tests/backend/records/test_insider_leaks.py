"""Smaller leaks an insider (or a careless client) could use: notifications that follow a user to
another unit, and path ids that are not ids."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.accounts.models import Role
from backend.accounts.services import user_update_access
from backend.jobs.services import job_execute
from backend.notifications.models import Notification
from tests.support.factories import UnitFactory, UserFactory, make_request, unit_staff
from tests.support.signing import decided

pytestmark = pytest.mark.django_db


def test_a_user_who_moves_no_longer_receives_or_lists_the_old_units_notifications(api, django_capture_on_commit_callbacks):
    # given a requester with a notification of their unit, then moved to another unit
    staff = unit_staff(UnitFactory())
    mover = staff["requester"]
    first = make_request("withdrawal", mover)
    with django_capture_on_commit_callbacks(execute=True):
        job_execute(job_id=str(decided(staff["approver"], "withdrawal", "approve", [first.id]).id))
    assert api(mover).get("/api/notifications/").json()["count"] == 1
    second = make_request("withdrawal", mover)
    elsewhere = UnitFactory()
    user_update_access(user=mover, unit=elsewhere)

    # when their old unit decides on a request they filed there
    with django_capture_on_commit_callbacks(execute=True):
        job_execute(job_id=str(decided(staff["approver"], "withdrawal", "reject", [second.id], reason="no").id))

    # then they get no notification of it, and list none of the old unit's (the positive control:
    # a notification of their new unit is listed)
    assert not Notification.objects.filter(user=mover, link_id=second.id).exists()
    listing = api(mover).get("/api/notifications/").json()
    assert listing["count"] == 0
    colleague_job = decided(UserFactory(unit=elsewhere, role=Role.APPROVER), "withdrawal", "approve",
                            [make_request("withdrawal", mover).id])
    with django_capture_on_commit_callbacks(execute=True):
        job_execute(job_id=str(colleague_job.id))
    assert api(mover).get("/api/notifications/").json()["count"] == 1


DETAIL_PATHS = [
    "/api/jobs/{}/", "/api/jobs/{}/outcomes/", "/api/crates/{}/", "/api/crates/{}/history/",
    "/api/withdrawal-requests/{}/", "/api/withdrawal-requests/{}/history/", "/api/transfer-requests/{}/",
    "/api/notifications/{}/read/", "/api/users/{}/", "/api/audit-trail/{}/", "/api/sendback-records/{}/",
]
not_a_uuid = st.text(alphabet=string.ascii_letters + string.digits + "-_~.%", min_size=1, max_size=40).filter(
    lambda text: text not in (".", "..") and len(text.replace("-", "")) != 32
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segment=not_a_uuid, path=st.sampled_from(DETAIL_PATHS), method=st.sampled_from(["get", "post"]))
def test_a_malformed_id_in_any_path_is_a_plain_404(api, segment, path, method):
    user = UserFactory(unit=UnitFactory(code="malformed"), username="malformed.admin", role=Role.ADMIN)
    answer = getattr(api(user), method)(path.format(segment), {}, format="json")
    assert answer.status_code in (404, 405), (path.format(segment), answer.status_code)
    if answer.status_code == 404:
        assert answer.json()["code"] == "not_found"
