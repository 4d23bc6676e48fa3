"""Entry points (manage.py, ASGI, WSGI, the Celery app, the relay) run only with an explicit
DJANGO_SETTINGS_MODULE: a process that silently fell back to the development settings in a
deployment would run with DEBUG on and the example secrets."""

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
