"""`manage.py seed_demo`: the demo world every newcomer starts from, and safe to run again."""

from __future__ import annotations

from io import StringIO

import pytest
from django.conf import settings
from django.contrib.auth import authenticate
from django.core.management import CommandError, call_command
from django.test import RequestFactory

from backend.accounts.models import Role, Unit, User
from backend.events.models import OutboxEvent, UnitSequence
from backend.records.lifecycle import REQUEST_KINDS
from backend.records.models import Crate, CrateStatus, NumberCounter, RequestStatus, SendBackRecord

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def development(settings):
    """seed_demo is a development command: it runs with DEBUG on (as `make up` runs it)."""
    settings.DEBUG = True


def _seed(*args: str) -> str:
    out = StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def _counts() -> dict:
    counts = {
        "units": Unit.objects.count(),
        "users": User.objects.count(),
        "crates": sorted(Crate.objects.values_list("unit__code", "status", "crate_number")),
        "sendbacks": SendBackRecord.objects.count(),
        "outbox": OutboxEvent.objects.count(),
        "counters": sorted(NumberCounter.objects.values_list("scope", "prefix", "last")),
    }
    for entity, kind in REQUEST_KINDS.items():
        counts[entity] = sorted(kind.model.objects.values_list("unit__code", "status", "request_number"))
    return counts


def test_seed_demo_builds_the_demo_world_and_is_idempotent():
    # when the demo is seeded
    output = _seed()
    first = _counts()

    # then there are the three demo units, one user per role each (the demo password works),
    units = {u.code: u for u in Unit.objects.all()}
    assert set(units) == {"north", "south", "east"}
    sign_in = RequestFactory().post("/api/auth/token/")  # the lockout backend wants the request
    for code, unit in units.items():
        for role in Role.values:
            user = User.objects.get(username=f"{code}.{role}")
            assert (user.unit_id, user.role) == (unit.id, role)
            assert user.get_full_name().strip()  # a printed name: signatures manifest it
            assert authenticate(sign_in, username=f"{code}.{role}", password=settings.DEMO_PASSWORD) == user
        # at least 200 crates in storage,
        assert Crate.objects.filter(unit=unit, status=CrateStatus.IN_STORAGE).count() >= 200
        # requests of every kind in every status,
        for entity, kind in REQUEST_KINDS.items():
            statuses = set(kind.model.objects.filter(unit=unit).values_list("status", flat=True))
            assert statuses == set(RequestStatus.values), (code, entity)
        # and the outbox agrees with the counters: seqs 1..last, no gap
        last = UnitSequence.objects.get(unit=unit).last_seq
        seqs = OutboxEvent.objects.filter(unit=unit).order_by("seq").values_list("seq", flat=True)
        assert list(seqs) == list(range(1, last + 1))
    assert User.objects.get(username="admin").is_superuser
    assert "north.approver" in output

    # when it runs again, nothing changes
    _seed("--quiet-logins")
    assert _counts() == first


def test_seed_demo_scales_with_its_options():
    # when seeded with more units, fewer crates and extra users
    _seed("--units", "5", "--crates", "50", "--users-per-unit", "3", "--quiet-logins")

    # then five units exist, each with its role users and three extra requesters, and its crates
    codes = set(Unit.objects.values_list("code", flat=True))
    assert codes == {"north", "south", "east", "unit-04", "unit-05"}
    for code in codes:
        names = set(User.objects.filter(unit__code=code).values_list("username", flat=True))
        assert names == {f"{code}.{role}" for role in Role.values} | {f"{code}.user{n}" for n in (1, 2, 3)}
        assert Crate.objects.filter(unit__code=code, status=CrateStatus.IN_STORAGE).count() >= 50
        for kind in REQUEST_KINDS.values():
            statuses = kind.model.objects.filter(unit__code=code).values_list("status", flat=True)
            assert set(statuses) == set(RequestStatus.values)


def test_seed_demo_refuses_without_debug_and_creates_nothing(settings):
    # given settings as a deployment has them
    settings.DEBUG = False

    # when seed_demo runs there, it refuses: it would create a superuser with a published password
    with pytest.raises(CommandError, match="runs only with DEBUG on"):
        _seed()

    # and nothing was created
    assert not User.objects.exists() and not Unit.objects.exists()


def test_seed_demo_runs_without_debug_when_forced(settings):
    # a benchmark seeds its own scratch database with DEBUG off
    settings.DEBUG = False

    _seed("--force", "--quiet-logins")

    assert User.objects.filter(username="admin", is_superuser=True).exists()
