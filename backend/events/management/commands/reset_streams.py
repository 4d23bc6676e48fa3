"""`manage.py reset_streams [--unit CODE ...] [--restart]`: new stream epochs (docs/operations.md).

Run it after restoring the database from a dump (before the web, worker and relay processes start),
and whenever the outbox is reset: every client then refetches instead of resuming a numbering that
no longer means what it saw."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from backend.events.epochs import streams_reset
from backend.events.models import UnitSequence


class Command(BaseCommand):
    help = "Give units' update streams a new epoch (after a restore or an outbox reset)."

    def add_arguments(self, parser):
        parser.add_argument("--unit", action="append", dest="units", metavar="CODE", help="a unit code (default: all units)")
        parser.add_argument(
            "--restart", action="store_true",
            help="also empty the units' outbox and count seqs from 0 again (an outbox reset)",
        )

    def handle(self, *args, units=None, restart=False, **options):
        unit_ids = None
        if units:
            found = dict(UnitSequence.objects.filter(unit__code__in=units).values_list("unit__code", "unit_id"))
            missing = sorted(set(units) - set(found))
            if missing:
                raise CommandError(f"no such unit: {', '.join(missing)}")
            unit_ids = list(found.values())
        renewed = streams_reset(unit_ids, restart=restart)
        self.stdout.write(f"{len(renewed)} stream(s) renewed{' and restarted' if restart else ''}.")
