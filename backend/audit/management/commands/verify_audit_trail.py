"""`manage.py verify_audit_trail [--unit CODE ...] [--sink-copy FILE]`: check the audit trail in full
(the hash chains, the signed checkpoints, the purge records, the sink's copy of the checkpoints) and
report the first broken rule (exit status 1), the same check as GET /api/audit-trail/verify/.
`--sink-copy`: compare with this copy of the sink (e.g. the syslog collector's archive)."""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from backend.audit.selectors import audit_verify, unit_ids_by_code
from backend.audit.verify import ENTRY_REASONS


class Command(BaseCommand):
    help = "Check the audit trail's hash chains; exit 1 at the first broken link."

    def add_arguments(self, parser):
        parser.add_argument("--unit", action="append", default=[], help="a unit code (repeatable); default: all units")
        parser.add_argument("--json", action="store_true", help="print the result as JSON")
        parser.add_argument("--sink-copy", help="a copy of the checkpoint sink to compare with (JSON or syslog lines)")

    def handle(self, *args, **opts):
        unit_ids = None
        if opts["unit"]:
            units = unit_ids_by_code(opts["unit"])
            missing = sorted(set(opts["unit"]) - set(units))
            if missing:
                raise CommandError(f"no such unit: {', '.join(missing)}")
            unit_ids = list(units.values())
        if opts["sink_copy"]:
            settings.AUDIT_CHECKPOINT_SINK_COPY = opts["sink_copy"]
            if not settings.AUDIT_CHECKPOINT_SINK.startswith("syslog"):
                settings.AUDIT_CHECKPOINT_SINK = f"file://{Path(opts['sink_copy']).resolve()}"
        result = audit_verify(unit_ids)
        if opts["json"]:
            self.stdout.write(json.dumps(result.as_dict()))
        elif result.ok:
            self.stdout.write(self.style.SUCCESS(
                f"audit trail intact: {result.entries} entries checked, checkpoints against the sink: {result.sink}"
            ))
        else:
            bad = result.first_bad
            what = "entry" if bad["rule"] in ENTRY_REASONS else bad["rule"].replace("_", " ")
            self.stdout.write(
                self.style.ERROR(
                    f"audit trail BROKEN at {what} {bad['id']} (unit {bad.get('unit_code') or bad['unit']}, "
                    f"position {bad['position']}) [{bad['rule']}]: {bad['reason']}; {result.entries} entries checked"
                )
            )
        if not result.ok:
            raise SystemExit(1)
