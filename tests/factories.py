"""Factories for tests. State changes go through services (so events and numbers are real); the
factories only make the starting world."""

from __future__ import annotations

import factory
from django.contrib.auth.hashers import make_password

from backend.accounts.models import Role, Unit, User
from backend.events.services import unit_sequence_ensure
from backend.records import services
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


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    unit = factory.SubFactory(UnitFactory)
    role = Role.REQUESTER
    username = factory.LazyAttributeSequence(lambda o, n: f"{o.unit.code}.{o.role}{n}")
    password = factory.LazyFunction(lambda: make_password(PASSWORD))


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
