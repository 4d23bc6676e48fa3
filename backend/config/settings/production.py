"""Production: behind a TLS-terminating proxy (compose/nginx), PostgreSQL, secrets from the env.

Every container of compose/docker-compose.yml runs with these settings; docs/deployment.md lists
the variables. `manage.py check --deploy` is clean with them (tests/deploy prove it).
"""

from pathlib import Path

from .base import *  # noqa: F403
from .base import BASE_DIR, env

DEBUG = False
SECRET_KEY = env("SECRET_KEY")  # no default: refuse to start without one
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
env("DATABASE_URL")  # no default either: production never falls back to the SQLite file

# The proxy terminates TLS and says so in X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
USE_X_FORWARDED_HOST = env.bool("USE_X_FORWARDED_HOST", default=True)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # container health checks talk plain HTTP to Daphne
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
STATIC_ROOT = Path(env("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
WHITENOISE_USE_FINDERS = False

# One JSON object per line, credentials masked (same filter as base).
LOGGING["formatters"]["json"] = {  # noqa: F405
    "()": "backend.common.logging.JsonFormatter",
}
LOGGING["handlers"]["console"]["formatter"] = "json"  # noqa: F405
# Workers and beat keep these handlers too (Celery would swap in its own plain-text ones).
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
