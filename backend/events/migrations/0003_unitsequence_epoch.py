import secrets

from django.db import migrations, models

import backend.events.models


def give_each_stream_its_own_epoch(apps, schema_editor):
    # AddField fills existing rows with one default value; every unit's stream gets its own.
    UnitSequence = apps.get_model("events", "UnitSequence")
    for row in UnitSequence.objects.all():
        UnitSequence.objects.filter(pk=row.pk).update(epoch=secrets.token_hex(8))


class Migration(migrations.Migration):

    dependencies = [
        ('events', '0002_outbox_activity'),
    ]

    operations = [
        migrations.AddField(
            model_name='unitsequence',
            name='epoch',
            field=models.CharField(default=backend.events.models.new_epoch, max_length=32),
        ),
        migrations.RunPython(give_each_stream_its_own_epoch, migrations.RunPython.noop),
    ]
