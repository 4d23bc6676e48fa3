from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _retention_write(sender, using, **kwargs) -> None:
    """Every `migrate` sets the retention the triggers enforce from AUDIT_RETENTION_YEARS."""
    from django.conf import settings
    from django.db import connections

    from . import db

    db.retention_write(connections[using], settings.AUDIT_RETENTION_YEARS)


class AuditConfig(AppConfig):
    name = "backend.audit"
    label = "audit"
    verbose_name = "Audit trail"

    def ready(self) -> None:
        from django.contrib import admin

        # No silent deletes: the admin site's bulk delete is gone for every model. Domain records,
        # audit entries, outbox events, jobs and counters are read-only there (ReadOnlyAdmin);
        # crates and requests are deleted through the API, with a reason, and kept.
        admin.site.disable_action("delete_selected")
        post_migrate.connect(_retention_write, sender=self, dispatch_uid="audit_retention_write")
