from django.db import migrations, models


class Migration(migrations.Migration):
    """Each signed entry holds a digest of its signature and binding (chain.signature_digest).
    Nullable, no default: SQLite adds the column in place (no table rebuild, the triggers stay)."""

    dependencies = [("audit", "0007_reviews")]

    operations = [
        migrations.AddField(
            model_name="auditentry",
            name="signature_digest",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
    ]
