"""`manage.py purge_audit_trail --before YYYY-MM-DD --reason "..."`: delete audit entries older
than a date that lies beyond AUDIT_RETENTION_YEARS, recording the purge (refused otherwise)."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime, time

from django.core.management.base import BaseCommand, CommandError

from backend.audit.services import audit_purge
from backend.common.errors import DomainError


class Command(BaseCommand):
    help = "Purge audit entries older than --before (must be beyond the audit retention)."

    def add_arguments(self, parser):
        parser.add_argument("--before", required=True, help="YYYY-MM-DD (UTC midnight)")
        parser.add_argument("--reason", required=True, help="why (recorded with the purge)")
        parser.add_argument("--by", default=None, help="who runs it (default: the OS user)")

    def handle(self, *args, **opts):
        try:
            day = datetime.strptime(opts["before"], "%Y-%m-%d").date()
        except ValueError:
            raise CommandError("--before must be a date, YYYY-MM-DD") from None
        before = datetime.combine(day, time.min, tzinfo=UTC)
        try:
            purges = audit_purge(before=before, purged_by=opts["by"] or getpass.getuser(), reason=opts["reason"])
        except DomainError as refused:
            raise CommandError(refused.message) from None
        total = sum(p.entries for p in purges)
        self.stdout.write(self.style.SUCCESS(f"purged {total} entries of {len(purges)} units older than {day}"))
