"""`manage.py checkpoint_audit_trail`: sign every unit's chain head that moved since its last
checkpoint now (the beat task `records.audit_checkpoint` does it every AUDIT_CHECKPOINT_MINUTES),
e.g. right before a backup or an inspection."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from backend.audit.checkpoints import checkpoints_write


class Command(BaseCommand):
    help = "Sign and record each unit's audit chain head (database and sink) that moved since its last checkpoint."

    def handle(self, *args, **opts):
        written = checkpoints_write()
        for checkpoint in written:
            self.stdout.write(f"{checkpoint.unit_code}: #{checkpoint.position} {checkpoint.hash} ({checkpoint.key_id})")
        self.stdout.write(self.style.SUCCESS(f"{len(written)} checkpoints written"))
