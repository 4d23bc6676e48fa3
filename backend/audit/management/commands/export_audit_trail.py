"""`manage.py export_audit_trail --format csv|ndjson [--unit CODE ...] [--since ISO] [--until ISO]
[--output FILE]`: the audit trail as GET /api/audit-trail/export/ writes it (the same columns and
lines, chain order, constant memory), for every unit or the ones named."""

from __future__ import annotations

import os
from datetime import datetime, time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from backend.audit.export import FORMATS, export_chunks
from backend.audit.models import AuditEntry
from backend.audit.selectors import unit_ids_by_code


def _moment(value: str, option: str) -> datetime:
    """An ISO 8601 date or date-time; without an offset, in the server's time zone (UTC), as the API's
    `since` / `until` read it."""
    try:
        moment = parse_datetime(value)
        if moment is None and (day := parse_date(value)) is not None:
            moment = datetime.combine(day, time.min)
    except ValueError:
        moment = None
    if moment is None:
        raise CommandError(f"{option} {value!r} is not a date or an ISO 8601 date-time")
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


class Command(BaseCommand):
    help = "Export the audit trail (CSV or NDJSON), oldest first in chain order, to a file or stdout."

    def add_arguments(self, parser):
        parser.add_argument("--format", required=True, choices=FORMATS)
        parser.add_argument("--unit", action="append", default=[], help="a unit code (repeatable); default: all units")
        parser.add_argument("--since", help="entries at or after this ISO 8601 date-time")
        parser.add_argument("--until", help="entries before this ISO 8601 date-time")
        parser.add_argument("--output", help="write to this file (default: stdout)")

    def handle(self, *args, **opts):
        entries = AuditEntry.objects.select_related("signature")
        if opts["unit"]:
            units = unit_ids_by_code(opts["unit"])
            missing = sorted(set(opts["unit"]) - set(units))
            if missing:
                raise CommandError(f"no such unit: {', '.join(missing)}")
            entries = entries.filter(unit_id__in=units.values())
        if opts["since"]:
            entries = entries.filter(at__gte=_moment(opts["since"], "--since"))
        if opts["until"]:
            entries = entries.filter(at__lt=_moment(opts["until"], "--until"))
        progress: dict = {}
        chunks = export_chunks(entries, opts["format"], progress=progress)
        if opts["output"]:
            # Written beside the target and renamed when complete: a failed export leaves no file that
            # looks whole.
            target = Path(opts["output"])
            partial = target.with_name(target.name + ".part")
            try:
                with partial.open("wb") as out:
                    for chunk in chunks:
                        out.write(chunk)
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
            where = str(target)
        else:
            for chunk in chunks:
                self.stdout.write(chunk.decode(), ending="")
            self.stdout.flush()
            where = "stdout"
        summary = f"exported {progress['rows']} entries ({progress['bytes']} bytes) to {where}"
        self.stderr.write(summary, style_func=lambda text: text)  # (a report, not an error)
