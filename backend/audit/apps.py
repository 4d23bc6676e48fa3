from django.apps import AppConfig


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
