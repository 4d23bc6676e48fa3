"""Factories for tests. State changes go through services (so events and numbers are real); the
factories only make the starting world."""

from __future__ import annotations

import factory
from django.contrib.auth.hashers import make_password

from backend.accounts.models import SIGNING_ROLES, Role, Unit, User
from backend.events.services import unit_sequence_ensure
from backend.records import services
from backend.records.lifecycle import REQUEST_KINDS
from backend.records.models import Crate

PASSWORD = "test-pass-2026"


class UnitFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Unit
        django_get_or_create = ("code",)
        skip_postgeneration_save = True

    code = factory.Sequence(lambda n: f"unit{n}")
    name = factory.LazyAttribute(lambda o: f"{o.code.title()} archive")

    @factory.post_generation
    def sequence(obj, create, extracted, **kwargs):
        if create:
            unit_sequence_ensure(obj.id)


def _signs(user) -> bool:
    return user.role in SIGNING_ROLES or user.is_superuser


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    unit = factory.SubFactory(UnitFactory)
    role = Role.REQUESTER
    username = factory.LazyAttributeSequence(lambda o, n: f"{o.unit.code}.{o.role}{n}")
    is_superuser = False
    # Whoever signs has a printed name (Part 11 §11.50: a signature without one is refused); the
    # others have none, as accounts made before printed names were required.
    first_name = factory.LazyAttribute(lambda o: o.role.title() if _signs(o) else "")
    last_name = factory.LazyAttributeSequence(lambda o, n: f"Tester{n}" if _signs(o) else "")
    password = factory.LazyFunction(lambda: make_password(PASSWORD))

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        """Straight into the table, like CrateFactory: the starting world, not an audited creation
        (every save of a user writes its `created` entry; tests/backend/accounts/
        test_access_changes.py makes accounts the ways production does). An existing username is
        returned as it is (get-or-create)."""
        existing = model_class.objects.filter(username=kwargs["username"]).first()
        if existing is not None:
            return existing
        user = model_class(*args, **kwargs)
        model_class.objects.bulk_create([user])
        return user


class CrateFactory(factory.django.DjangoModelFactory):
    """A crate straight in the table (no event): for setting the scene only."""

    class Meta:
        model = Crate

    unit = factory.SubFactory(UnitFactory)
    crate_number = factory.Sequence(lambda n: f"CR-2026-T{n:05d}")
    location = "Aisle 1"


def make_request(entity: str, requester: User, crates: list[Crate] | None = None, **kwargs):
    """A pending request filed through the service (numbered, with its `created` event)."""
    crates = crates or [CrateFactory(unit=requester.unit)]
    if entity == "transfer" and "destination_unit_id" not in kwargs:
        kwargs["destination_unit_id"] = UnitFactory().id
    return services.request_create(
        entity=entity, actor=requester, crate_ids=[c.id for c in crates], reason="test", **kwargs
    )


def unit_staff(unit: Unit) -> dict[str, User]:
    """One user per role in `unit`."""
    return {role: UserFactory(unit=unit, role=role) for role in Role.values}


def pending_requests_fast(entity: str, requester: User, count: int, destination=None) -> list:
    """`count` pending requests with one crate each, inserted in bulk (no events): scene-setting for
    bulk tests, where filing thousands through the service would only slow the suite down."""
    kind = REQUEST_KINDS[entity]
    crates = Crate.objects.bulk_create(
        Crate(unit=requester.unit, crate_number=f"CR-BULK-{requester.unit.code}-{entity[0]}{i:05d}") for i in range(count)
    )
    extra = {"destination_unit": destination or UnitFactory()} if entity == "transfer" else {}
    requests = kind.model.objects.bulk_create(
        kind.model(
            unit=requester.unit, created_by=requester, request_number=f"{kind.prefix}-BULK-{i:05d}", **extra
        )
        for i in range(count)
    )
    through = kind.model.crates.through
    field = f"{kind.model._meta.model_name}_id"
    through.objects.bulk_create(through(crate_id=c.id, **{field: r.id}) for c, r in zip(crates, requests, strict=True))
    return requests


def outbox_history_fast(unit: Unit, count: int) -> int:
    """`count` committed, published crate events appended to the unit's outbox in two statements
    (scene-setting for resume tests that need a long history; frames as outbox_write makes them).
    Returns the unit's new last seq."""
    import uuid

    from django.db import transaction
    from django.utils import timezone

    from backend.events import schema
    from backend.events.models import OutboxEvent, UnitSequence

    with transaction.atomic():
        counter = UnitSequence.objects.select_for_update().get(unit=unit)
        first, now = counter.last_seq + 1, timezone.now()
        rows = []
        for seq in range(first, first + count):
            data = {"id": str(uuid.uuid4()), "status": "in_storage", "crate_number": f"CR-HIST-{seq:06d}"}
            frame = schema.encode(schema.data_update(entity="crate", action="created", data=data, timestamp=now, seq=seq))
            rows.append(OutboxEvent(unit=unit, seq=seq, entity="crate", action="created", object_id=data["id"],
                                    frame=frame, created_at=now, published_at=now))
        OutboxEvent.objects.bulk_create(rows, batch_size=5000)
        counter.last_seq = first + count - 1
        counter.save(update_fields=["last_seq"])
    return counter.last_seq


def destruction_due_world():
    """A unit with one user per role (and another unit with its own) and crates whose destruction is
    due in 20, 3 and 60 days, one destroyed (due in 3) and one with no date: (unit, staff, crates)."""
    from datetime import timedelta

    from django.utils import timezone

    from backend.records.models import CrateStatus

    unit, other = UnitFactory(), UnitFactory()
    staff = unit_staff(unit)
    unit_staff(other)
    today = timezone.now().date()
    crates = {
        "in_20": CrateFactory(unit=unit, destruction_due=today + timedelta(days=20)),
        "in_3": CrateFactory(unit=unit, destruction_due=today + timedelta(days=3)),
        "in_60": CrateFactory(unit=unit, destruction_due=today + timedelta(days=60)),
        "destroyed": CrateFactory(unit=unit, destruction_due=today + timedelta(days=3), status=CrateStatus.DESTROYED),
        "none": CrateFactory(unit=unit),
    }
    return unit, staff, crates
