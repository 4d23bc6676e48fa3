from django.apps import AppConfig


class RecordsConfig(AppConfig):
    name = "backend.records"
    label = "records"

    def ready(self) -> None:
        from backend.audit.vocabulary import actions_register
        from backend.jobs import registry

        from .actions import ENTRY_WORDS
        from .job_kinds import KINDS

        registry.register(*KINDS)
        actions_register(ENTRY_WORDS)
