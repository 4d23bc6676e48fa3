"""`manage.py verify_audit_trail [--unit CODE ...]`: recompute the hash chains and report the first
broken link (exit status 1), the same check as GET /api/audit-trail/verify/."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from backend.audit.selectors import audit_verify, unit_ids_by_code


class Command(BaseCommand):
    help = "Check the audit trail's hash chains; exit 1 at the first broken link."

    def add_arguments(self, parser):
        parser.add_argument("--unit", action="append", default=[], help="a unit code (repeatable); default: all units")
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    def handle(self, *args, **opts):
        unit_ids = None
        if opts["unit"]:
            units = unit_ids_by_code(opts["unit"])
            missing = sorted(set(opts["unit"]) - set(units))
            if missing:
                raise CommandError(f"no such unit: {', '.join(missing)}")
            unit_ids = list(units.values())
        result = audit_verify(unit_ids)
        if opts["json"]:
            self.stdout.write(json.dumps(result.as_dict()))
        elif result.ok:
            self.stdout.write(self.style.SUCCESS(f"audit trail intact: {result.entries} entries checked"))
        else:
            bad = result.first_bad
            self.stdout.write(
                self.style.ERROR(
                    f"audit trail BROKEN at entry {bad['id']} (unit {bad['unit']}, position {bad['position']}): "
                    f"{bad['reason']}; {result.entries} entries checked"
                )
            )
        if not result.ok:
            raise SystemExit(1)
