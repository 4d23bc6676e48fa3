"""The admin site as an insider with a superuser account would use it: every model it shows is
walked. Domain records, their trail, the outbox, jobs, notifications, sign-in logs and revocations
are view-only; what it may change is listed below with the audit entry each change writes (and each
of those is tested in tests/backend/accounts/test_access_changes.py)."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.test import Client, RequestFactory

from backend.accounts.models import Role, User
from backend.audit.models import AuditEntry
from tests.support.factories import PASSWORD, UnitFactory, UserFactory

# model: (what the admin may do, the entry that records it)
CHANGEABLE = {
    "accounts.user": ({"add", "change"}, "created / deactivated / reactivated / unit_changed / role_changed / "
                      "password_changed (accounts.services.access_after_save)"),
    "accounts.unit": ({"add", "change"}, "settings_changed in the unit's trail (accounts.services.unit_after_save)"),
    "auth.group": ({"add", "change", "delete"}, "role_changed of each member (group_permissions_changed, "
                   "grants_changed, group_deleted)"),
    "axes.accessattempt": ({"delete"}, "signin_unlocked when the attempts lock (accounts.services.attempt_deleted)"),
}


def _can(model_admin, method: str) -> set[str]:
    superuser = User(username="walker", is_superuser=True, is_staff=True, is_active=True)
    request = getattr(RequestFactory(), method)("/admin/")
    request.user = superuser
    return {what for what, check in (("add", model_admin.has_add_permission), ("change", model_admin.has_change_permission),
                                     ("delete", model_admin.has_delete_permission)) if check(request)}


@pytest.mark.parametrize("label", sorted(m._meta.label_lower for m in admin.site._registry))
def test_the_admin_site_writes_only_what_is_audited(label):
    # a superuser's writes (a POST: a GET may open a read-only change form) are refused on every model
    # but the audited ones, and on those only the listed ones are allowed
    (model_admin,) = [a for m, a in admin.site._registry.items() if m._meta.label_lower == label]
    allowed, _ = CHANGEABLE.get(label, (set(), ""))
    assert _can(model_admin, "post") == allowed


def test_every_changeable_model_is_still_shown():
    # the list above names nothing the admin no longer shows (a stale allowance hides nothing)
    assert set(CHANGEABLE) <= {m._meta.label_lower for m in admin.site._registry}


@pytest.mark.django_db
def test_a_units_settings_changed_in_the_admin_are_in_its_trail_and_it_cannot_be_deleted():
    # given a unit and a site admin
    unit = UnitFactory(code="east", name="East", timezone="UTC")
    superuser = User.objects.create_superuser("root.admin", "root@example.org", PASSWORD)
    client = Client()
    client.force_login(superuser)

    # when the admin changes its time zone (the zone its reports and console show times in)
    answer = client.post(f"/admin/accounts/unit/{unit.id}/change/",
                         {"code": "east", "name": "East", "timezone": "Europe/Berlin"})

    # then the unit's trail says what changed and who changed it
    assert answer.status_code == 302, answer.content[:500]
    (entry,) = AuditEntry.objects.filter(unit=unit, entity="unit", action="settings_changed")
    assert entry.changes == {"timezone": ["UTC", "Europe/Berlin"]}
    assert (entry.actor_id, entry.record_number) == (superuser.id, "east")
    # and a save that changes nothing writes nothing
    client.post(f"/admin/accounts/unit/{unit.id}/change/", {"code": "east", "name": "East", "timezone": "Europe/Berlin"})
    assert AuditEntry.objects.filter(unit=unit, entity="unit").count() == 1
    # and the unit cannot be deleted there (its trail outlives it)
    assert client.post(f"/admin/accounts/unit/{unit.id}/delete/", {"post": "yes"}).status_code == 403


@pytest.mark.django_db
def test_a_group_deleted_in_the_admin_is_taken_from_each_member_in_their_trail():
    from django.contrib.auth.models import Group

    group = Group.objects.create(name="night shift")
    members = [UserFactory(unit=UnitFactory(), role=Role.APPROVER) for _ in range(2)]
    group.user_set.add(*members)
    superuser = User.objects.create_superuser("root.admin", "root@example.org", PASSWORD)
    client = Client()
    client.force_login(superuser)

    answer = client.post(f"/admin/auth/group/{group.id}/delete/", {"post": "yes"})

    assert answer.status_code == 302, answer.content[:500]
    for member in members:
        (taken,) = AuditEntry.objects.filter(record_id=member.id, action="role_changed", changes__groups=[["night shift"], []])
        assert taken.actor_id == superuser.id


@pytest.mark.django_db(transaction=True)
def test_a_units_settings_change_and_its_entry_commit_together():
    # given a unit, saved from a shell (autocommit: no transaction around it)
    from unittest import mock

    unit = UnitFactory(code="west", timezone="UTC")
    unit.timezone = "Asia/Tokyo"

    # when its audit entry cannot be written
    with mock.patch("backend.accounts.services.journal_write", side_effect=RuntimeError("the trail is down")):
        with pytest.raises(RuntimeError):
            unit.save()

    # then the change is not kept either: no setting changes without its entry
    unit.refresh_from_db()
    assert unit.timezone == "UTC"
    assert not AuditEntry.objects.filter(unit=unit, entity="unit").exists()
