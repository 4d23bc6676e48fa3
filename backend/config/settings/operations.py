"""Operating it: Flower, metrics, logging, the demo data, fault points."""

from __future__ import annotations

from .environment import env

# --- Flower / metrics -----------------------------------------------------------------------
FLOWER_BASIC_AUTH = env("FLOWER_BASIC_AUTH", default="admin:flower-pass-2026")
METRICS_TOKEN = env("METRICS_TOKEN", default="")

# --- Logging --------------------------------------------------------------------------------
# Query strings of WebSocket handshakes carry credentials: the filter masks `token=` and
# `ticket=` values in every record, whatever logger emits it (Daphne's access log included).
LOG_LEVEL = env("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact_credentials": {"()": "backend.common.logging.RedactCredentialsFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact_credentials"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "daphne": {"level": LOG_LEVEL},
    },
}

DEMO_PASSWORD = env("DEMO_PASSWORD", default="demo-pass-2026")

# Fault points (backend/common/faults.py): empty everywhere but in the test settings.
FAULT_POINTS: dict = {}
