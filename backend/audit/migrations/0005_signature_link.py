"""The entries' `signature_id` column becomes a foreign key to the signatures, in place.

The column keeps its name and values, so nothing is rewritten: dropping and re-adding it would make
SQLite rebuild the table, and a rebuilt SQLite table loses the append-only triggers. PostgreSQL
gets the constraint and an index; SQLite keeps the column as it is (Django reads it as the key).
"""

import django.db.models.deletion
from django.db import migrations, models


def link(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "ALTER TABLE audit_auditentry ADD CONSTRAINT audit_auditentry_signature_fk "
            "FOREIGN KEY (signature_id) REFERENCES audit_signature (id) DEFERRABLE INITIALLY DEFERRED"
        )
        schema_editor.execute("CREATE INDEX audit_auditentry_signature_idx ON audit_auditentry (signature_id)")


def unlink(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS audit_auditentry_signature_idx")
        schema_editor.execute("ALTER TABLE audit_auditentry DROP CONSTRAINT IF EXISTS audit_auditentry_signature_fk")


class Migration(migrations.Migration):
    dependencies = [("audit", "0004_signatures_append_only")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(model_name="auditentry", name="signature_id"),
                migrations.AddField(
                    model_name="auditentry",
                    name="signature",
                    field=models.ForeignKey(
                        blank=True, null=True, on_delete=django.db.models.deletion.PROTECT,
                        related_name="entries", to="audit.signature",
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(link, unlink)],
        ),
    ]
