"""Every change of who may use the system is audited (entity `user`: who, when, why) and revokes what
it makes stale at once, whichever path made it: the admin site's forms, `manage.py changepassword`,
the services. Attacked as an insider would: a ticket bought before the change, a refresh token kept."""

from __future__ import annotations

import asyncio
from unittest import mock

import pytest
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from backend.accounts.models import Role, User
from backend.accounts.services import CLOSE_ACCESS_REVOKED
from backend.audit.models import AuditEntry
from realtime.auth import AuthFailed, authenticate
from tests.support.factories import PASSWORD, UnitFactory, UserFactory

# Transactional: the ticket is checked as the handshake checks it, by the realtime pool in another
# thread and connection, which sees only what committed.
pytestmark = pytest.mark.django_db(transaction=True)
NEW_PASSWORD = "a-quite-new-password-2026"


@pytest.fixture
def superuser():
    return User.objects.create_superuser("root.admin", "root@example.org", PASSWORD)


@pytest.fixture
def admin_site(superuser):
    client = Client()  # the admin site's own forms (form-encoded posts)
    client.force_login(superuser)
    return client


def _signed_in(user) -> tuple[str, str]:
    """(refresh token, ws ticket) the user holds before the change."""
    tokens = APIClient(REMOTE_ADDR="10.9.9.9").post(
        "/api/auth/token/", {"username": user.username, "password": PASSWORD}, format="json"
    ).json()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    return tokens["refresh"], client.post("/api/auth/ws-ticket/").json()["ticket"]


def _assert_revoked(refresh: str, ticket: str) -> None:
    answer = APIClient().post("/api/auth/token/refresh/", {"refresh": refresh}, format="json")
    assert answer.status_code == 401, answer.content
    with pytest.raises(AuthFailed):
        asyncio.run(authenticate({"ticket": [ticket]}))


def _entries(user, action: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(entity="user", record_id=user.id, action=action))


def _change_form(client, user) -> dict:
    form = client.get(f"/admin/accounts/user/{user.id}/change/").context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None and k not in ("password", "groups", "user_permissions")}
    data.update(unit=str(user.unit_id), role=user.role, username=user.username, is_active="on" if user.is_active else "",
                date_joined_0="2026-01-01", date_joined_1="00:00:00")
    return data


def test_a_password_set_in_the_admin_is_audited_and_revokes_tokens_tickets_and_sockets(
    admin_site, superuser, django_capture_on_commit_callbacks
):
    user = UserFactory(role=Role.APPROVER)
    refresh, ticket = _signed_in(user)
    with mock.patch("backend.accounts.services.user_close_send") as closed, \
            django_capture_on_commit_callbacks(execute=True):
        answer = admin_site.post(f"/admin/accounts/user/{user.id}/password/", {
            "password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true",
            "change_reason": "forgot it, identity checked",
        })
    assert answer.status_code == 302, answer.content[:500]
    (entry,) = _entries(user, "password_changed")
    assert (entry.actor_id, entry.reason, entry.unit_id) == (superuser.id, "forgot it, identity checked", user.unit_id)
    _assert_revoked(refresh, ticket)
    closed.assert_called_once_with(user.id, CLOSE_ACCESS_REVOKED)


def test_manage_py_changepassword_is_audited_and_revokes(django_capture_on_commit_callbacks):
    user = UserFactory(role=Role.APPROVER)
    refresh, ticket = _signed_in(user)
    with mock.patch("getpass.getpass", return_value=NEW_PASSWORD), \
            mock.patch("backend.accounts.services.user_close_send") as closed, \
            django_capture_on_commit_callbacks(execute=True):
        call_command("changepassword", user.username, stdout=mock.Mock())
    (entry,) = _entries(user, "password_changed")
    assert entry.actor_username == "system" and "changepassword" in entry.reason
    _assert_revoked(refresh, ticket)
    closed.assert_called_once_with(user.id, CLOSE_ACCESS_REVOKED)


def test_a_password_set_by_any_code_that_saves_it_revokes_too(django_capture_on_commit_callbacks):
    user = UserFactory(role=Role.APPROVER)
    refresh, ticket = _signed_in(user)
    with django_capture_on_commit_callbacks(execute=True):
        user.set_password(NEW_PASSWORD)  # no service, no form: a shell, a migration, a script
        user.save()
    assert len(_entries(user, "password_changed")) == 1
    _assert_revoked(refresh, ticket)


@pytest.mark.parametrize("change", ["deactivated", "role_changed", "unit_changed"])
def test_access_changes_in_the_admin_are_audited_with_who_and_why_and_revoke(admin_site, superuser, change):
    user = UserFactory(role=Role.APPROVER)
    refresh, ticket = _signed_in(user)
    data = _change_form(admin_site, user)
    elsewhere = UnitFactory()
    data.update({"deactivated": {"is_active": ""}, "role_changed": {"role": Role.REQUESTER},
                 "unit_changed": {"unit": str(elsewhere.id)}}[change])

    refused = admin_site.post(f"/admin/accounts/user/{user.id}/change/", data)  # no reason: refused
    assert refused.status_code == 200 and not _entries(user, change)
    answer = admin_site.post(f"/admin/accounts/user/{user.id}/change/", {**data, "change_reason": "CAPA-7"})

    assert answer.status_code == 302, answer.content[:500]
    entries = _entries(user, change)
    assert len(entries) == (2 if change == "unit_changed" else 1)  # once (the admin's save, not twice)
    assert all((e.actor_id, e.reason) == (superuser.id, "CAPA-7") for e in entries)
    if change == "unit_changed":  # both units' trails say it: the one left, the one joined
        assert {e.unit_id for e in entries} == {user.unit_id, elsewhere.id}
    _assert_revoked(refresh, ticket)


def test_an_account_made_in_the_admin_is_audited_as_created(admin_site, superuser):
    unit = UnitFactory()
    form = {
        "username": "new.approver", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true",
        "unit": str(unit.id), "role": Role.APPROVER, "change_reason": "hired",
    }
    # an approver signs: without a printed name the account is not made
    refused = admin_site.post("/admin/accounts/user/add/", form)
    assert refused.status_code == 200 and b"printed name" in refused.content
    assert not User.objects.filter(username="new.approver").exists()
    answer = admin_site.post("/admin/accounts/user/add/", {**form, "first_name": "Nina", "last_name": "Approver"})
    assert answer.status_code == 302, answer.content[:500]
    user = User.objects.get(username="new.approver")
    (entry,) = _entries(user, "created")
    assert (entry.actor_id, entry.reason, entry.unit_id) == (superuser.id, "hired", unit.id)
    assert entry.changes["role"] == [None, Role.APPROVER]
    assert not _entries(user, "password_changed")  # the first password is part of the creation


def test_a_reactivation_in_the_admin_is_audited_once_with_who_and_why(admin_site, superuser):
    user = UserFactory(role=Role.APPROVER, is_active=False)
    data = {**_change_form(admin_site, user), "is_active": "on", "change_reason": "back from leave"}

    answer = admin_site.post(f"/admin/accounts/user/{user.id}/change/", data)

    assert answer.status_code == 302, answer.content[:500]
    (entry,) = _entries(user, "reactivated")
    assert (entry.actor_id, entry.reason, entry.changes) == (superuser.id, "back from leave", {"is_active": [False, True]})


def _shell_change(user, change: str, elsewhere) -> None:
    """What a shell, a script or a data migration does: set the field and save, no service, no form."""
    if change == "deactivated":
        user.is_active = False
    elif change == "reactivated":
        user.is_active = True
    elif change == "role_changed":
        user.role = Role.REQUESTER
    else:
        user.unit = elsewhere
    user.save()


@pytest.mark.parametrize("change", ["deactivated", "reactivated", "role_changed", "unit_changed"])
def test_an_access_change_saved_from_a_shell_is_audited_once_as_the_system_and_revokes(change):
    user = UserFactory(role=Role.APPROVER, is_active=change != "reactivated")
    refresh, ticket = _signed_in(user) if change != "reactivated" else (None, None)
    elsewhere = UnitFactory()

    _shell_change(user, change, elsewhere)

    entries = _entries(user, change)
    assert len(entries) == (2 if change == "unit_changed" else 1)  # a move: the unit left, and the unit joined
    assert all(e.actor_username == "system" and e.actor_id is None for e in entries)
    changes = ("deactivated", "reactivated", "role_changed", "unit_changed")
    assert sum(len(_entries(user, other)) for other in changes) == len(entries)  # and nothing else
    if refresh:
        _assert_revoked(refresh, ticket)


def test_an_account_made_from_a_shell_is_audited_as_created_once():
    unit = UnitFactory()
    user = User.objects.create_user("shell.made", password=NEW_PASSWORD, unit=unit, role=Role.REQUESTER)
    (entry,) = _entries(user, "created")
    assert entry.actor_username == "system" and entry.changes["unit"] == [None, unit.code]
    assert not _entries(user, "password_changed")  # the first password is part of the creation
    # and a later new password on the same object is its own change
    user.set_password("another-quite-new-password")
    user.save()
    assert len(_entries(user, "password_changed")) == 1


def test_a_save_that_changes_no_access_writes_nothing():
    user = UserFactory(role=Role.APPROVER)
    user.first_name = "Renamed"
    user.save()
    user.save(update_fields=["last_login"])
    assert not AuditEntry.objects.filter(entity="user", record_id=user.id).exists()


def test_the_service_audits_once_with_its_actor_and_reason(superuser):
    from backend.accounts.services import user_update_access

    user = UserFactory(role=Role.APPROVER)
    user_update_access(user=user, is_active=False, role=Role.REQUESTER, actor=superuser, reason="left the site")
    for change in ("deactivated", "role_changed"):
        (entry,) = _entries(user, change)
        assert (entry.actor_id, entry.reason) == (superuser.id, "left the site")


# --- superuser and staff: the widest access there is --------------------------------------------


def _assert_refresh_revoked_and_sockets_closed(refresh: str, closed) -> None:
    """What a role change revokes (a ticket carries the role, not the superuser flag, and a socket
    shows the unit's events whatever the flag: it is closed instead)."""
    answer = APIClient().post("/api/auth/token/refresh/", {"refresh": refresh}, format="json")
    assert answer.status_code == 401, answer.content
    assert closed.call_count == 1 and closed.call_args.args[1] == CLOSE_ACCESS_REVOKED


def test_making_someone_a_superuser_in_the_admin_is_audited_with_who_and_why_and_revokes(
    admin_site, superuser, django_capture_on_commit_callbacks
):
    # given an approver of a unit, signed in
    user = UserFactory(role=Role.APPROVER)
    refresh, _ = _signed_in(user)
    # when an admin of the site ticks "superuser" (every role in every unit) and "staff", with a reason
    data = {**_change_form(admin_site, user), "is_superuser": "on", "is_staff": "on", "change_reason": "CAPA-9"}
    with mock.patch("backend.accounts.services.user_close_send") as closed, \
            django_capture_on_commit_callbacks(execute=True):
        answer = admin_site.post(f"/admin/accounts/user/{user.id}/change/", data)

    # then the user is a superuser, and the unit's trail says so once, with who and why
    assert answer.status_code == 302, answer.content[:500]
    user.refresh_from_db()
    assert user.is_superuser and user.is_staff
    (entry,) = _entries(user, "role_changed")
    assert (entry.actor_id, entry.reason) == (superuser.id, "CAPA-9")
    assert entry.changes == {"is_superuser": [False, True], "is_staff": [False, True]}
    # and what was issued under the old access is revoked, as for any role change
    _assert_refresh_revoked_and_sockets_closed(refresh, closed)


def test_taking_superuser_away_from_a_shell_is_audited_once_as_the_system_and_revokes(
    django_capture_on_commit_callbacks,
):
    # given a superuser of a unit, signed in
    user = UserFactory(role=Role.APPROVER, is_superuser=True, is_staff=True)
    refresh, _ = _signed_in(user)
    # when a shell takes it away
    with mock.patch("backend.accounts.services.user_close_send") as closed, \
            django_capture_on_commit_callbacks(execute=True):
        user.is_superuser = False
        user.save()
    # then it is audited once, by the system, and everything issued before is revoked
    (entry,) = _entries(user, "role_changed")
    assert entry.actor_username == "system" and entry.changes == {"is_superuser": [True, False]}
    _assert_refresh_revoked_and_sockets_closed(refresh, closed)


def test_a_permission_or_group_given_in_the_admin_is_audited_with_who_and_why(admin_site, superuser):
    # given a staff member of a unit (the admin site, nothing in it yet)
    from django.contrib.auth.models import Group, Permission

    user = UserFactory(role=Role.APPROVER, is_staff=True)
    may_change_users = Permission.objects.get(codename="change_user", content_type__app_label="accounts")
    group = Group.objects.create(name="archivists")
    # when an admin of the site gives them the permission to change users, and a group, with a reason
    data = {**_change_form(admin_site, user), "is_staff": "on", "change_reason": "CAPA-11",
            "user_permissions": [str(may_change_users.pk)], "groups": [str(group.pk)]}
    answer = admin_site.post(f"/admin/accounts/user/{user.id}/change/", data)

    # then the unit's trail says what was given, by whom and why
    assert answer.status_code == 302, answer.content[:500]
    assert user.has_perm("accounts.change_user")
    entries = _entries(user, "role_changed")
    assert {(e.actor_id, e.reason) for e in entries} == {(superuser.id, "CAPA-11")}
    given = {key: value for e in entries for key, value in e.changes.items()}
    assert given == {"user_permissions": [[], ["accounts.change_user"]], "groups": [[], ["archivists"]]}


def test_a_permission_taken_from_a_shell_is_audited_as_the_system():
    from django.contrib.auth.models import Permission

    user = UserFactory(role=Role.APPROVER, is_staff=True)
    permission = Permission.objects.get(codename="change_user", content_type__app_label="accounts")
    user.user_permissions.add(permission)
    user.user_permissions.remove(permission)
    given, taken = sorted(_entries(user, "role_changed"), key=lambda e: e.position)
    assert given.changes == {"user_permissions": [[], ["accounts.change_user"]]}
    assert taken.changes == {"user_permissions": [["accounts.change_user"], []]}
    assert taken.actor_username == "system"


def test_a_group_emptied_from_its_side_is_audited_for_each_member():
    from django.contrib.auth.models import Group

    group = Group.objects.create(name="night shift")
    members = [UserFactory(role=Role.APPROVER), UserFactory(role=Role.APPROVER)]
    group.user_set.add(*members)
    group.user_set.clear()
    for member in members:
        given, taken = sorted(_entries(member, "role_changed"), key=lambda e: e.position)
        assert (given.changes, taken.changes) == ({"groups": [[], ["night shift"]]}, {"groups": [["night shift"], []]})


def test_a_revoked_refresh_token_cannot_be_revived_in_the_admin(admin_site, superuser):
    # given a user whose refresh token was revoked by a deactivation, then reactivated
    from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken

    user = UserFactory(unit=UnitFactory(), role=Role.APPROVER)
    refresh, _ = _signed_in(user)
    user.is_active = False
    user.save()
    user.is_active = True
    user.save()
    (revoked,) = BlacklistedToken.objects.filter(token__user=user)
    url = f"/admin/token_blacklist/blacklistedtoken/{revoked.id}/"

    # when a superuser tries to delete its blacklist row in the admin, or edit it, one by one or from the list
    attempts = [
        admin_site.post(f"{url}delete/", {"post": "yes"}),
        admin_site.post(f"{url}change/", {"token": str(revoked.token_id), "blacklisted_at_0": "2026-01-01",
                                          "blacklisted_at_1": "00:00:00"}),
        admin_site.post("/admin/token_blacklist/blacklistedtoken/",
                        {"action": "delete_selected", "_selected_action": [str(revoked.id)], "post": "yes"}),
    ]

    # then each is refused, the row stays, and the token stays revoked (the list itself can be read)
    assert [a.status_code for a in attempts[:2]] == [403, 403], [a.status_code for a in attempts]
    assert BlacklistedToken.objects.filter(id=revoked.id).exists()
    assert APIClient().post("/api/auth/token/refresh/", {"refresh": refresh}, format="json").status_code == 401
    assert admin_site.get("/admin/token_blacklist/blacklistedtoken/").status_code == 200


def test_a_permission_given_to_a_group_is_audited_for_each_member(admin_site, superuser):
    # given a group with two staff members, and a third user outside it
    from django.contrib.auth.models import Group, Permission

    group = Group.objects.create(name="archivists")
    members = [UserFactory(role=Role.APPROVER, is_staff=True), UserFactory(role=Role.REQUESTER, is_staff=True)]
    outsider = UserFactory(role=Role.APPROVER, is_staff=True)
    group.user_set.add(*members)
    may_change_users = Permission.objects.get(codename="change_user", content_type__app_label="accounts")

    # when a site admin gives the group the permission to change users in the admin's group form
    answer = admin_site.post(f"/admin/auth/group/{group.id}/change/",
                             {"name": "archivists", "permissions": [str(may_change_users.pk)]})

    # then each member's trail says so, with who gave it; the outsider's says nothing
    assert answer.status_code == 302, answer.content[:500]
    for member in members:
        (given,) = [e for e in _entries(member, "role_changed") if "group_permissions" in e.changes]
        assert given.changes == {"group_permissions": [[], ["archivists: accounts.change_user"]]}
        assert given.actor_id == superuser.id
    assert not _entries(outsider, "role_changed")

    # and when it is taken back from a shell, from the permission's side, each member's trail says that too
    may_change_users.group_set.remove(group)
    for member in members:
        taken = [e for e in _entries(member, "role_changed") if e.changes.get("group_permissions", [[], []])[0]]
        assert [(e.changes, e.actor_username) for e in taken] == [
            ({"group_permissions": [["archivists: accounts.change_user"], []]}, "system")]
