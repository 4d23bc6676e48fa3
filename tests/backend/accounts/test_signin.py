"""Signing in and refreshing: throttled per address and per username, locked out after repeated
failures (released by time or a unit admin), refresh tokens that work once and die with a password
change, a deactivation or a move, and access tokens that carry the user's current unit and role."""

from __future__ import annotations

import io
from datetime import datetime, timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import base_user
from django.core.management import call_command
from django.db.models import Sum
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from backend.accounts.models import Role, User
from backend.accounts.services import user_set_password, user_update_access
from backend.accounts.signin import LoginAddressThrottle, LoginUsernameThrottle
from backend.audit.models import AuditEntry
from tests.support.db import run_concurrently
from tests.support.factories import PASSWORD, UnitFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def clean_slate(settings):
    # Throttle counts live in the shared cache (Redis): every test starts from zero.
    from django.core.cache import cache

    cache.clear()
    AccessAttempt.objects.all().delete()


def sign_in(username: str, password: str = PASSWORD, address: str = "10.0.0.1"):
    return APIClient(REMOTE_ADDR=address).post("/api/auth/token/", {"username": username, "password": password}, format="json")


def refresh(token: str):
    return APIClient().post("/api/auth/token/refresh/", {"refresh": token}, format="json")


def test_repeated_failures_lock_the_username_from_that_address_until_a_unit_admin_unlocks_it(api, settings):
    # given a user and the default limit of 10 failed sign-ins
    user = UserFactory(role=Role.APPROVER)
    admin = UserFactory(unit=user.unit, role=Role.ADMIN)

    # when 10 wrong passwords come from one address
    failures = [sign_in(user.username, "wrong", address="10.0.1.9").status_code for _ in range(10)]
    locked = sign_in(user.username, PASSWORD, address="10.0.1.9")

    # then each failure is a 401, and then even the right password is refused from there: 429
    # locked_out, with the time left of the 15-minute cool-off
    assert failures == [401] * 10
    assert (locked.status_code, locked.json()["code"]) == (429, "locked_out")
    assert 800 < int(locked["Retry-After"]) <= 900
    # and the lockout is in the trail of the user's unit, with the address it came from
    (entry,) = AuditEntry.objects.filter(record_id=user.id, action="signin_locked")
    assert entry.entity == "user" and "10.0.1.9" in entry.reason and entry.changes["locked_out"] == [False, True]
    # with when it lifts by itself (the cool-off after the last failure), which writes no entry of its own
    until = datetime.fromisoformat(entry.changes["locked_until"][1])
    assert timedelta(minutes=14) < until - entry.at <= timedelta(minutes=15)
    # and the unit admin sees it, and unlocks it (audited, with the admin as actor)
    listed = {row["username"]: row["locked_out"] for row in api(admin).get("/api/users/").json()}
    assert listed[user.username] is True
    assert api(admin).post(f"/api/users/{user.id}/unlock/", {"reason": "called me"}, format="json").status_code == 200
    (unlocked,) = AuditEntry.objects.filter(record_id=user.id, action="signin_unlocked")
    assert (unlocked.actor_id, unlocked.reason) == (admin.id, "called me")
    assert sign_in(user.username, address="10.0.1.9").status_code == 200


def test_an_outsider_cannot_lock_a_user_out_from_everywhere(settings):
    # given an outsider who fails 10 times on purpose with the approver's username
    user = UserFactory(role=Role.APPROVER)
    assert {sign_in(user.username, "wrong", address="203.0.113.66").status_code for _ in range(10)} == {401}

    # when the approver signs in from the office, the right password works; the outsider stays locked
    assert sign_in(user.username, address="10.0.9.1").status_code == 200
    assert sign_in(user.username, "wrong", address="203.0.113.66").status_code == 429


def test_a_lockout_lifts_by_itself_after_the_cool_off(settings):
    user = UserFactory()
    for _ in range(10):
        sign_in(user.username, "wrong", address="10.0.3.1")
    assert sign_in(user.username, address="10.0.3.1").status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    assert sign_in(user.username, address="10.0.3.1").status_code == 200


@pytest.mark.parametrize("path", ["admin", "axes_reset_username", "axes_reset"])
def test_a_lockout_lifted_outside_the_unlock_api_is_audited_once(path):
    # given a user locked out from one address (10 failures)
    user = UserFactory(role=Role.APPROVER)
    for _ in range(10):
        sign_in(user.username, "wrong", address="10.0.5.1")
    assert sign_in(user.username, address="10.0.5.1").status_code == 429
    # when the lock is lifted another way than the unit admin's unlock: the admin site's delete of the
    # attempt, or django-axes' own reset commands
    root = User.objects.create_superuser("root.unlocker", "root@example.org", PASSWORD)
    if path == "admin":
        site = Client()
        site.force_login(root)
        (attempt,) = AccessAttempt.objects.filter(username=user.username)
        answer = site.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
        assert answer.status_code == 302, answer.content[:500]
    else:
        call_command(path, *([user.username] if path == "axes_reset_username" else []), stdout=io.StringIO())

    # then the user signs in again from there, and the unlock is in the unit's trail, once, with who
    assert sign_in(user.username, address="10.0.5.1").status_code == 200
    (entry,) = AuditEntry.objects.filter(record_id=user.id, action="signin_unlocked")
    assert entry.changes["locked_out"] == [True, False] and "10.0.5.1" in entry.reason
    assert entry.actor_id == (root.id if path == "admin" else None)


def test_expired_or_unlocked_attempts_cleared_write_no_unlock():
    # given a lock that lifted by itself, and a few failures short of a lock from another address
    user = UserFactory(role=Role.APPROVER)
    for _ in range(10):
        sign_in(user.username, "wrong", address="10.0.6.1")
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    for _ in range(3):
        sign_in(user.username, "wrong", address="10.0.6.2")
    # when every attempt is cleared
    call_command("axes_reset", stdout=io.StringIO())
    # then nothing was unlocked, and the trail says nothing of it
    assert not AuditEntry.objects.filter(record_id=user.id, action="signin_unlocked").exists()


def test_only_the_users_own_unit_admin_may_unlock(api):
    user = UserFactory(role=Role.REQUESTER)
    other_admin = UserFactory(unit=UnitFactory(), role=Role.ADMIN)
    colleague = UserFactory(unit=user.unit, role=Role.APPROVER)
    assert api(other_admin).post(f"/api/users/{user.id}/unlock/").status_code == 404
    assert api(colleague).post(f"/api/users/{user.id}/unlock/").status_code == 403


def test_sign_ins_are_throttled_per_username_before_any_password_is_checked(monkeypatch):
    # given 3 attempts a minute per username
    monkeypatch.setattr(LoginUsernameThrottle, "THROTTLE_RATES", {"login_username": "3/min", "login_address": "1000/min"})
    monkeypatch.setattr(LoginAddressThrottle, "THROTTLE_RATES", {"login_username": "3/min", "login_address": "1000/min"})
    user = UserFactory()
    hashed = []
    real_check = base_user.check_password
    monkeypatch.setattr(base_user, "check_password", lambda *a, **k: hashed.append(1) or real_check(*a, **k))
    answers = [sign_in(user.username, "wrong", address=f"10.0.4.{i}") for i in range(4)]
    assert [a.status_code for a in answers] == [401, 401, 401, 429]
    # (the fourth cost no password hash: each is hundreds of milliseconds of CPU in production)
    assert len(hashed) == 3
    assert answers[3].json()["code"] == "throttled" and int(answers[3]["Retry-After"]) > 0
    # (a throttled attempt is refused before the password is checked: it is not a recorded failure)
    recorded = AccessAttempt.objects.filter(username=user.username).aggregate(n=Sum("failures_since_start"))["n"]
    assert recorded == 3


def test_sign_ins_are_throttled_per_address_whatever_the_username(monkeypatch):
    rates = {"login_username": "1000/min", "login_address": "3/min"}
    monkeypatch.setattr(LoginUsernameThrottle, "THROTTLE_RATES", rates)
    monkeypatch.setattr(LoginAddressThrottle, "THROTTLE_RATES", rates)
    answers = [sign_in(f"someone{i}", "wrong", address="10.0.5.1").status_code for i in range(4)]
    assert answers == [401, 401, 401, 429]
    # and a client's X-Forwarded-For does not buy it a new address
    spoofed = APIClient(REMOTE_ADDR="10.0.5.1", HTTP_X_FORWARDED_FOR="1.2.3.4").post(
        "/api/auth/token/", {"username": "x", "password": "y"}, format="json"
    )
    assert spoofed.status_code == 429


def test_a_refresh_token_works_once_and_the_new_pair_works():
    user = UserFactory()
    first = sign_in(user.username).json()
    renewed = refresh(first["refresh"])
    assert renewed.status_code == 200 and set(renewed.json()) == {"access", "refresh"}
    again = refresh(first["refresh"])
    assert (again.status_code, again.json()["code"]) == (401, "token_not_valid")
    assert refresh(renewed.json()["refresh"]).status_code == 200


def test_a_refresh_token_used_twice_at_once_works_once():
    user = UserFactory()
    token = sign_in(user.username).json()["refresh"]
    results = run_concurrently(4, lambda i: refresh(token).status_code)
    assert sorted(results) == [200, 401, 401, 401]


def test_a_refreshed_access_token_carries_the_users_current_role():
    # (a role changed past the model, e.g. by SQL: a save would have revoked the token, as a role
    # change does; the refresh still reads the role afresh)
    user = UserFactory(role=Role.REQUESTER)
    token = sign_in(user.username).json()["refresh"]
    User.objects.filter(id=user.id).update(role=Role.APPROVER)
    user.refresh_from_db()
    access = AccessToken(refresh(token).json()["access"])
    assert (access["role"], access["unit_id"]) == (Role.APPROVER, str(user.unit_id))


def test_a_password_change_ends_every_token_issued_before_it(api):
    user = UserFactory()
    tokens = sign_in(user.username).json()
    user_set_password(user=user, password="a-new-long-password-2026")
    assert refresh(tokens["refresh"]).json()["code"] == "token_not_valid"  # blacklisted
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert client.get("/api/me/").status_code == 401  # CHECK_REVOKE_TOKEN
    assert sign_in(user.username, "a-new-long-password-2026").status_code == 200


@pytest.mark.parametrize("change", ["deactivated", "moved"])
def test_losing_access_revokes_the_refresh_tokens(change):
    user = UserFactory()
    token = sign_in(user.username).json()["refresh"]
    if change == "deactivated":
        user_update_access(user=user, is_active=False)
    else:
        user_update_access(user=user, unit=UnitFactory())
    assert refresh(token).status_code == 401


def test_a_refresh_token_of_another_unit_is_refused_even_if_not_revoked():
    # (a move made past the model, e.g. by SQL, so nothing revoked the token: its unit no longer
    # matches; a save of the move, by any path, revokes it: test_access_changes.py)
    user = UserFactory()
    token = sign_in(user.username).json()["refresh"]
    User.objects.filter(id=user.id).update(unit=UnitFactory())
    answer = refresh(token)
    assert (answer.status_code, answer.json()["code"]) == (401, "unit_changed")


def test_a_sustained_username_flood_never_keeps_the_owner_out():
    # given the owner, who signs in from his usual address (the office)
    user = UserFactory(role=Role.APPROVER)
    assert sign_in(user.username, address="10.0.9.1").status_code == 200

    for round_ in range(2):  # a flood that goes on, and the owner who comes back in the middle of it
        # when an outsider sends 60 wrong passwords, 20 from each of three addresses (under the
        # per-address limit of 30 a minute), and the next round from three more
        flood = [sign_in(user.username, "wrong", address=f"203.0.113.{10 * round_ + n}").status_code
                 for n in range(3) for _ in range(20)]
        # then the outsider gets nowhere: wrong (401), or refused (429: locked out, or slowed)
        assert set(flood) <= {401, 429} and 429 in flood, flood
        # and the owner, from his usual address, signs in: nobody else's failures slow him there
        owner = sign_in(user.username, address="10.0.9.1")
        assert owner.status_code == 200, owner.content


def test_a_flood_from_one_address_never_slows_the_username_anywhere():
    # given an outsider on one address: 10 failures lock that (username, address) pair; what it is
    # refused afterwards (locked_out) is no password check and counts against nothing
    user = UserFactory(role=Role.APPROVER)
    codes = [sign_in(user.username, "wrong", address="203.0.113.66").status_code for _ in range(60)]
    assert codes[:10] == [401] * 10 and set(codes[10:]) == {429}
    # (nor do spellings in other cases, from a second address: each is another, nonexistent account,
    # with a lockout and a budget of its own)
    for spelling in (user.username.upper(), user.username.title()):
        assert {sign_in(spelling, "wrong", address="203.0.113.77").status_code for _ in range(12)} == {401, 429}

    # when the owner signs in from an address he has never used, the right password works
    assert sign_in(user.username, address="10.0.9.44").status_code == 200


def test_a_guesser_spread_over_many_addresses_is_still_slowed(monkeypatch):
    # given the per-username rate (20 failed checks a minute), a clock that does not tick, and a
    # guesser who tries one password from each of many addresses
    monkeypatch.setattr(LoginUsernameThrottle, "timer", lambda self: 1_000_000.0)
    user = UserFactory(role=Role.APPROVER)
    hashed = []
    real_check = base_user.check_password
    monkeypatch.setattr(base_user, "check_password", lambda *a, **k: hashed.append(1) or real_check(*a, **k))
    codes = [sign_in(user.username, "wrong", address=f"198.51.100.{n}") for n in range(25)]

    # then the 21st and later are refused before any password is hashed: 429 throttled
    assert [c.status_code for c in codes] == [401] * 20 + [429] * 5
    assert {c.json()["code"] for c in codes[20:]} == {"throttled"} and len(hashed) == 20
    # and the right password from another new address is refused the same way: no oracle
    right = sign_in(user.username, address="198.51.100.200")
    assert (right.status_code, right.json()["code"]) == (429, "throttled") and len(hashed) == 20
