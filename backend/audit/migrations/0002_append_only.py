"""The database refuses UPDATE, DELETE and TRUNCATE on the audit tables (backend/audit/db.py)."""

from django.db import migrations


def install(apps, schema_editor):
    from backend.audit import db

    db.install(schema_editor.connection, db.FIRST_TABLES)


def remove(apps, schema_editor):
    from backend.audit import db

    db.remove(schema_editor.connection, db.FIRST_TABLES)


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [migrations.RunPython(install, remove)]
