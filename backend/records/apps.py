from django.apps import AppConfig


class RecordsConfig(AppConfig):
    name = "backend.records"
    label = "records"

    def ready(self) -> None:
        from backend.jobs import registry

        from .job_kinds import KINDS

        registry.register(*KINDS)
