"""The database refuses UPDATE, DELETE and TRUNCATE on the signature tables too (backend/audit/db.py)."""

from django.db import migrations


def install(apps, schema_editor):
    from backend.audit import db

    db.install(schema_editor.connection, db.SIGNATURE_TABLES)


def remove(apps, schema_editor):
    from backend.audit import db

    db.remove(schema_editor.connection, db.SIGNATURE_TABLES)


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_signatures")]

    operations = [migrations.RunPython(install, remove)]
