"""Forged addresses never enter the record or dodge a throttle, against a real Daphne started with the
Procfile's flags: a client's own X-Forwarded-For is ignored unless its peer is a configured proxy."""

from __future__ import annotations

import httpx
import pytest
from django.core.cache import cache

from backend.accounts.models import Role
from backend.audit.models import AuditEntry
from bench import processes
from tests.support.auth import access_token
from tests.support.factories import PASSWORD, UnitFactory, UserFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def web(live_env):
    """A Daphne whose sign-in limits are the defaults' shape, small enough to reach quickly; the
    throttles' counters (the shared cache) start empty."""
    cache.clear()
    started = []

    def start(**env):
        proc, port = processes.start_procfile_daphne({**live_env, "LOGIN_RATE_PER_ADDRESS": "10/min", **env})
        started.append(proc)
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in started:
        proc.stop()


def _create_crate(base: str, user, forwarded: str) -> AuditEntry:
    answer = httpx.post(f"{base}/api/crates/", json={"location": "A1"}, timeout=10,
                        headers={"Authorization": f"Bearer {access_token(user)}", "X-Forwarded-For": forwarded})
    assert answer.status_code == 201, answer.text
    return AuditEntry.objects.get(record_id=answer.json()["id"], action="created")


def test_a_clients_forwarded_for_never_becomes_the_audited_address(web):
    store = UserFactory(unit=UnitFactory(), role=Role.STORE)
    direct = web()  # as `make up` serves: no proxy trusted

    entry = _create_crate(direct, store, "203.0.113.9")

    assert entry.client_ip == "127.0.0.1"


def test_a_configured_proxys_forwarded_for_is_the_audited_address(web):
    # the positive control: the same request from a trusted proxy (here: this host) names the client
    store = UserFactory(unit=UnitFactory(), role=Role.STORE)
    behind_nginx = web(TRUSTED_PROXIES="127.0.0.1")

    entry = _create_crate(behind_nginx, store, "203.0.113.9")

    assert entry.client_ip == "203.0.113.9"


def test_sign_ins_that_rotate_forwarded_for_are_throttled_per_real_address(web):
    base = web()
    UserFactory(unit=UnitFactory(), username="rotating.target")
    codes = [
        httpx.post(f"{base}/api/auth/token/", json={"username": f"nobody{n}", "password": "x"}, timeout=10,
                   headers={"X-Forwarded-For": f"198.51.100.{n}"}).status_code
        for n in range(14)
    ]
    assert codes[:10] == [401] * 10 and set(codes[10:]) == {429}, codes


def test_the_admin_sign_in_is_throttled_like_the_api(web):
    base = web()
    with httpx.Client(base_url=base, timeout=10) as client:
        client.get("/admin/login/")
        token = client.cookies.get("csrftoken")
        codes = [
            client.post("/admin/login/", data={"username": f"nobody{n}", "password": "x", "csrfmiddlewaretoken": token},
                        headers={"X-Forwarded-For": f"198.51.100.{n}", "Referer": f"{base}/admin/login/"}).status_code
            for n in range(14)
        ]
    assert set(codes[:10]) == {200} and set(codes[10:]) == {429}, codes


def _admin_sign_in(base: str, username: str, password: str, address: str) -> httpx.Response:
    """One post of the admin's sign-in form, as a browser behind the trusted proxy at `address`."""
    with httpx.Client(base_url=base, timeout=10) as client:
        client.get("/admin/login/")
        return client.post("/admin/login/", headers={"X-Forwarded-For": address, "Referer": f"{base}/admin/login/"},
                           data={"username": username, "password": password,
                                 "csrfmiddlewaretoken": client.cookies.get("csrftoken")})


def test_the_admin_sign_in_locks_the_username_address_pair(web):
    # given a staff member who signs in to the admin from the office, behind the trusted proxy (here:
    # this host), with room in the per-address rate so that what refuses is the lockout
    base = web(TRUSTED_PROXIES="127.0.0.1", LOGIN_RATE_PER_ADDRESS="100/min")
    staff = UserFactory(unit=UnitFactory(), role=Role.ADMIN, is_staff=True, is_superuser=True)
    assert _admin_sign_in(base, staff.username, PASSWORD, "10.0.9.1").status_code == 302

    # when 10 wrong passwords come from one address, and 20 more from two others (a flood over
    # the per-username rate)
    wrong = [_admin_sign_in(base, staff.username, "wrong", f"203.0.113.{n}").status_code
             for n in (66, 67, 68) for _ in range(10)]

    # then each is refused (200: the form again; the 10th and later 429), and the right password
    # from the first address is refused too: 429 for the lockout's quarter of an hour, not a minute
    assert wrong[:9] == [200] * 9 and set(wrong) == {200, 429}, wrong
    locked = _admin_sign_in(base, staff.username, PASSWORD, "203.0.113.66")
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 60, locked.headers
    assert AuditEntry.objects.filter(record_id=staff.id, action="signin_locked", reason__contains="203.0.113.66").exists()
    # and from his usual address the right password signs him in: the lock is the pair's alone
    assert _admin_sign_in(base, staff.username, PASSWORD, "10.0.9.1").status_code == 302
