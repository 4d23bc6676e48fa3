"""Signed checkpoints (and the scheduled verification's state), append-only like the entries; the
database refuses purge records inside AUDIT_RETENTION_YEARS and SQLite's INSERT OR REPLACE over an
audit row (backend/audit/db.py): the triggers of the older tables are installed again."""

import uuid

from django.conf import settings
from django.db import migrations, models


def install(apps, schema_editor):
    from backend.audit import db

    connection = schema_editor.connection
    db.remove(connection, (*db.FIRST_TABLES, *db.SIGNATURE_TABLES))
    db.install(connection, db.TABLES)
    db.retention_write(connection, settings.AUDIT_RETENTION_YEARS)


def remove(apps, schema_editor):
    from backend.audit import db

    connection = schema_editor.connection
    db.remove(connection, db.TABLES)
    db.install(connection, (*db.FIRST_TABLES, *db.SIGNATURE_TABLES))


class Migration(migrations.Migration):
    dependencies = [("audit", "0005_signature_link")]

    operations = [
        migrations.CreateModel(
            name="AuditCheckpoint",
            fields=[
                ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ("unit_id", models.UUIDField()),
                ("unit_code", models.CharField(max_length=32)),
                ("position", models.BigIntegerField()),
                ("hash", models.CharField(max_length=64)),
                ("purged_through", models.BigIntegerField(default=0)),
                ("at", models.DateTimeField()),
                ("key_id", models.CharField(max_length=64)),
                ("signature", models.CharField(max_length=128)),
            ],
            options={
                "ordering": ["unit_id", "position", "at"],
                "indexes": [models.Index(fields=["unit_id", "position", "at"], name="audit_checkpoint_unit_idx")],
            },
        ),
        migrations.CreateModel(
            name="AuditVerification",
            fields=[
                ("unit_id", models.UUIDField(primary_key=True, serialize=False)),
                ("unit_code", models.CharField(max_length=32)),
                ("ok", models.BooleanField()),
                ("first_bad", models.JSONField(blank=True, null=True)),
                ("through_checkpoint", models.UUIDField(blank=True, null=True)),
                ("entries", models.BigIntegerField(default=0)),
                ("checked_at", models.DateTimeField()),
                ("full_at", models.DateTimeField(blank=True, null=True)),
                ("notified_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={"ordering": ["unit_code"]},
        ),
        migrations.RunPython(install, remove),
    ]
