"""Demo data, idempotent: units, one user per role per unit, crates, and requests in every status.

    manage.py seed_demo                       # north, south, east; 200+ crates each
    manage.py seed_demo --units 10 --crates 2000 --users-per-unit 100   # benchmark scale

Everything is written through the services, so numbers, versions and outbox events are exactly
what the running system would have produced.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from backend.accounts.models import Role, Unit, User
from backend.accounts.signatures import signature_sign
from backend.events.services import unit_sequence_ensure
from backend.records import services
from backend.records.actions import ACTIONS, APPROVE, REJECT, SEND_BACK
from backend.records.lifecycle import REQUEST_KINDS
from backend.records.models import Crate, CrateStatus, RequestStatus, WithdrawalRequest
from backend.records.selectors import free_crates_in_storage

DEMO_UNITS = [("north", "North archive"), ("south", "South archive"), ("east", "East archive")]
# The requests each unit gets per kind, by final status, and how to get there.
STATUS_PATHS = {
    RequestStatus.PENDING: [],
    RequestStatus.APPROVED: [APPROVE.name],
    RequestStatus.REJECTED: [REJECT.name],
    RequestStatus.SENT_BACK: [SEND_BACK.name],
}


# Every demo user has a printed name (signatures manifest it): a first name by role, the unit as surname.
DEMO_FIRST_NAMES = {
    Role.REQUESTER: "Rita", Role.APPROVER: "Arne", Role.STORE: "Stig", Role.ADMIN: "Ada", Role.QA: "Quinn",
}


class Command(BaseCommand):
    help = "Create (or top up) demo units, users, crates and requests. Safe to run repeatedly."

    def add_arguments(self, parser):
        parser.add_argument("--units", type=int, default=3, help="number of units (>= 3: north, south, east, unit-04, ...)")
        parser.add_argument("--crates", type=int, default=240, help="crates in storage per unit")
        parser.add_argument("--users-per-unit", type=int, default=0, help="extra requester users per unit (<unit>.user<n>)")
        parser.add_argument("--requests", type=int, default=1, help="requests per kind and status per unit")
        parser.add_argument(
            "--pending", type=int, default=0, help="extra pending withdrawal requests per unit (benchmarks)"
        )
        parser.add_argument("--password", default=None, help="default: $DEMO_PASSWORD or demo-pass-2026")
        parser.add_argument("--quiet-logins", action="store_true", help="do not print the logins")
        parser.add_argument(
            "--force", action="store_true",
            help="run although DEBUG is off (a benchmark's own database, never a real archive)",
        )

    def handle(self, *args, **opts):
        if not settings.DEBUG and not opts["force"]:
            raise CommandError(
                "seed_demo creates users with a published password and a superuser 'admin': it runs only "
                "with DEBUG on (development). On a scratch database with DEBUG off, pass --force."
            )
        password = opts["password"] or settings.DEMO_PASSWORD
        units = list(DEMO_UNITS)
        units += [(f"unit-{i:02d}", f"Unit {i:02d}") for i in range(len(DEMO_UNITS) + 1, opts["units"] + 1)]
        units = units[: max(opts["units"], 1)]
        # Every unit exists before any is filled: transfers go to another unit, so the first unit
        # would otherwise get none on the first run and its transfers only on the second.
        demo_units = {code: Unit.objects.get_or_create(code=code, defaults={"name": name})[0] for code, name in units}
        for code, unit in demo_units.items():
            unit_sequence_ensure(unit.id)
            people = {role: self._user(f"{code}.{role}", unit, role, password) for role in Role.values}
            for n in range(1, opts["users_per_unit"] + 1):
                self._user(f"{code}.user{n}", unit, Role.REQUESTER, password, first_name=f"User{n}")
            self._crates(unit, people[Role.STORE], opts["crates"])
            self._requests(unit, people, opts["requests"], units, password)
            self._crates(unit, people[Role.STORE], opts["crates"])  # top up what approvals took
            self._pending(people[Role.REQUESTER], opts["pending"])
        User.objects.filter(username="admin").exists() or User.objects.create_superuser(
            "admin", email="", password=password
        )
        if not opts["quiet_logins"]:
            self._print_logins(units, password)

    def _user(self, username: str, unit: Unit, role: str, password: str, first_name: str = "") -> User:
        names = {"first_name": first_name or DEMO_FIRST_NAMES.get(role, "Demo"), "last_name": unit.code.title()}
        user = User.objects.filter(username=username).first()
        if user is None:  # one save: the account and its first password (audited as `created`)
            user = User(username=username, unit=unit, role=role, **names)
            user.set_password(password)
            user.save()
            return user
        if not user.get_full_name().strip():  # a demo user seeded before printed names existed
            User.objects.filter(id=user.id).update(**names)
            user.first_name, user.last_name = names["first_name"], names["last_name"]
        if not user.check_password(password):
            user.set_password(password)
            user.save(update_fields=["password"])
        return user

    def _crates(self, unit: Unit, store: User, wanted: int) -> None:
        have = Crate.objects.filter(unit=unit, status=CrateStatus.IN_STORAGE).count()
        missing = wanted - have
        while missing > 0:
            batch = min(missing, 2000)
            services.crates_create_bulk(actor=store, unit=unit, count=batch)
            missing -= batch

    def _requests(self, unit: Unit, people: dict, per_status: int, units: list, password: str) -> None:
        requester, approver = people[Role.REQUESTER], people[Role.APPROVER]
        other = Unit.objects.exclude(id=unit.id).order_by("code").first()
        for entity, kind in REQUEST_KINDS.items():
            if entity == "transfer" and other is None:
                continue
            for status, path in STATUS_PATHS.items():
                have = kind.model.objects.filter(unit=unit, status=status).count()
                for _ in range(per_status - have):
                    crate = free_crates_in_storage(unit.id).first()
                    if crate is None:
                        return
                    with transaction.atomic():
                        request = services.request_create(
                            entity=entity, actor=requester, crate_ids=[crate.id],
                            reason=f"Demo {status.replace('_', ' ')} {entity} request",
                            destination_unit_id=other.id if entity == "transfer" else None,
                        )
                        for action in path:
                            # Signed as every decision is: the demo approver gives their password,
                            # for the version they see.
                            meaning = ACTIONS[action].meaning
                            signature = signature_sign(
                                user=approver, password=password, meaning=meaning, expected=meaning, action=action,
                                entity=entity, unit_id=unit.id,
                            )
                            request = services.request_transition(
                                entity=entity, action=action, actor=approver, request_id=request.id,
                                reason="Demo decision" if action != "approve" else "", signature_id=signature.id,
                                expected_version=request.version,
                            )

    def _pending(self, requester: User, wanted: int) -> None:
        have = WithdrawalRequest.objects.filter(unit=requester.unit, status=RequestStatus.PENDING).count()
        missing = wanted - have
        while missing > 0:
            batch = min(missing, 2000)
            services.requests_create_bulk(entity="withdrawal", actor=requester, count=batch, reason="Bulk demo")
            missing -= batch

    def _print_logins(self, units: list, password: str) -> None:
        self.stdout.write(self.style.SUCCESS(f"Demo logins (password for all: {password})"))
        for code, _ in units[:3]:
            self.stdout.write("  " + "  ".join(f"{code}.{role}" for role in Role.values))
        if len(units) > 3:
            self.stdout.write(f"  ... and the same for {len(units) - 3} more units")
        self.stdout.write("  admin (Django superuser, all units) -> /admin/")
