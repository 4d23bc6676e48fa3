"""What every entry point (manage.py, ASGI, WSGI, the Celery app, the relay) does before Django
starts: it refuses to run without an explicit DJANGO_SETTINGS_MODULE (a process that silently fell
back to the development settings in a deployment would run with DEBUG on and the example secrets),
and the long-running ones say which process they are, for the settings that differ by process
(backend/config/settings/database.py: the web tier's connection pool; every session's name)."""

from __future__ import annotations

import os
import sys

MESSAGE = (
    "DJANGO_SETTINGS_MODULE is not set. Use backend.config.settings.base for development "
    "(make up and make test set it) or backend.config.settings.production for a deployment."
)


def require_settings_module() -> None:
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        sys.exit(MESSAGE)


PROCESSES = ("web", "worker", "relay")


def declare_process(name: str) -> None:
    """Name this process before Django reads its settings (they read RECORDS_PROCESS)."""
    if name not in PROCESSES:
        raise ValueError(f"unknown process {name!r}: one of {PROCESSES}")
    require_settings_module()
    os.environ["RECORDS_PROCESS"] = name
