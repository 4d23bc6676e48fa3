"""Production: behind a TLS-terminating proxy (compose/nginx), PostgreSQL, secrets from the env.

Every container of compose/docker-compose.yml runs with these settings; docs/deployment.md lists
the variables. `manage.py check --deploy` is clean with them (tests/compose prove it), and refuses
to run with the example environment's placeholder secrets.
"""

import os

from django.core.exceptions import ImproperlyConfigured

from backend.audit.keys import parse_private
from backend.common.secrets import UnsafeSecret, require_password_in_basic_auth, require_secret

from .base import *  # noqa: F403
from .base import SIMPLE_JWT, env

DEBUG = False


def require_checkpoint_key(value: str) -> str:
    """AUDIT_CHECKPOINT_KEY: a PEM file or PEM text that holds an Ed25519 key, or a long random secret."""
    if value and not value.lstrip().startswith("-----BEGIN") and not value.startswith("/"):
        require_secret("AUDIT_CHECKPOINT_KEY", value, min_length=43)
    elif not value:
        require_secret("AUDIT_CHECKPOINT_KEY", value)
    try:
        parse_private(value)
    except (OSError, ValueError, ImproperlyConfigured) as unusable:
        raise UnsafeSecret(f"AUDIT_CHECKPOINT_KEY is not a usable Ed25519 key: {unusable}") from None
    return value

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
env("DATABASE_URL")  # no default: production never falls back to the SQLite file

# Secrets: present, long, and none of the values published in this repository (an example
# SECRET_KEY or JWT key lets anyone who read it forge a token for any user). Refused at start,
# naming the setting, so `check --deploy` with an example environment fails and says what to set.
try:
    SECRET_KEY = require_secret("SECRET_KEY", env("SECRET_KEY", default=""))
    SIMPLE_JWT["SIGNING_KEY"] = require_secret("JWT_SIGNING_KEY", env("JWT_SIGNING_KEY", default=""))
    if SIMPLE_JWT["SIGNING_KEY"] == SECRET_KEY:
        raise UnsafeSecret("JWT_SIGNING_KEY must differ from SECRET_KEY (each is rotated on its own).")
    METRICS_TOKEN = require_secret("METRICS_TOKEN", env("METRICS_TOKEN", default=""), min_length=32)
    # Flower reads it from its own environment (only the flower service has it); where it is set,
    # the process refuses a published or weak password.
    if "FLOWER_BASIC_AUTH" in os.environ:
        FLOWER_BASIC_AUTH = require_password_in_basic_auth("FLOWER_BASIC_AUTH", os.environ["FLOWER_BASIC_AUTH"])
    # The audit checkpoints' signing key: required, never generated here (docs/audit.md, "Keys").
    AUDIT_CHECKPOINT_KEY_GENERATE = False
    AUDIT_CHECKPOINT_KEY = require_checkpoint_key(env("AUDIT_CHECKPOINT_KEY", default=""))
    if env("FAULT_POINTS", default=""):
        raise UnsafeSecret("FAULT_POINTS is a test switch and must not be set in production.")
except UnsafeSecret as unsafe:
    raise ImproperlyConfigured(f"Refusing to start with unsafe production settings: {unsafe}") from None

# The OpenAPI schema and Swagger UI: for staff only unless API_DOCS says otherwise (base.py).
API_DOCS = env("API_DOCS", default="staff")

# The proxy terminates TLS and says so in X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
USE_X_FORWARDED_HOST = env.bool("USE_X_FORWARDED_HOST", default=True)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
# Container health checks and Prometheus (inside the compose network) talk plain HTTP to Daphne;
# /metrics asks for its bearer token itself, and a redirect would not keep the token from the wire.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
# The directive alone enrolls nothing: a domain joins the browsers' preload list only when its
# owner submits it (hstspreload.org). Turn it off for a domain that must keep plain-HTTP subdomains.
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# collectstatic runs at image build time into STATIC_ROOT (WhiteNoise serves it from there), and
# once more per deploy into the volume nginx serves /static/ from (the `static` compose service).
# The build runs it with the base settings (it has no secrets, and production refuses to start
# without them); that collects the same files because production changes neither INSTALLED_APPS
# nor STORAGES (tests/compose check both).
WHITENOISE_USE_FINDERS = False

# One JSON object per line, credentials masked (same filter as base).
LOGGING["formatters"]["json"] = {  # noqa: F405
    "()": "backend.common.logging.JsonFormatter",
}
LOGGING["handlers"]["console"]["formatter"] = "json"  # noqa: F405
# Workers and beat keep these handlers too (Celery would swap in its own plain-text ones).
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
