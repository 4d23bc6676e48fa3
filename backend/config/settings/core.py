"""Django itself: secrets and hosts, apps and middleware, templates, sign-in and passwords, static files."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from backend.common.proxies import parse_networks

from .environment import BASE_DIR, env

SECRET_KEY = env("SECRET_KEY", default="dev-only-insecure-secret-key-change-me-0123456789abcdef")
DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
# Proxies whose X-Forwarded-For is believed (addresses or networks). Empty: Daphne serves clients
# directly (`make up`) and a client's forwarding headers are dropped (backend/common/proxies.py).
TRUSTED_PROXIES = parse_networks(env.list("TRUSTED_PROXIES", default=[]))
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    # Before django.contrib.auth: its `changepassword` command (audited) takes the place of auth's.
    "backend.accounts",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt",
    "rest_framework_simplejwt.token_blacklist",
    "axes",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "backend.notifications",
    "backend.audit",
    "backend.events",
    "backend.records",
    "backend.jobs",
    "realtime",
]

MIDDLEWARE = [
    # First: each request's request -> client trace (backend/common/trace.py).
    "backend.common.trace.RequestTraceMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Where each request comes from (address, user agent), for the audit entries of its changes.
    "backend.audit.middleware.AuditOriginMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Lockout answers for the admin site's login form; the API's sign-in checks it itself.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "backend.config.urls"
WSGI_APPLICATION = "backend.config.wsgi.application"
ASGI_APPLICATION = "backend.config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# The largest request body the API reads (bytes): 413 payload_too_large beyond. Django's own
# default (2.5 MiB) fits a bulk action of BULK_MAX_IDS ids with their versions.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=2_621_440)

AUTH_USER_MODEL = "accounts.User"
# django-axes first: it refuses a locked-out username before the password is checked.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
# Sign-in lockout (django-axes, counted in the database): AXES_FAILURE_LIMIT failed sign-ins of one
# username *from one address* lock that pair for AXES_COOLOFF_TIME, or until a unit admin unlocks it
# (POST /api/users/{id}/unlock/). The pair, not the username alone: an outsider who knows a username
# cannot lock its owner out from everywhere by failing on purpose. The username is slowed everywhere
# instead (LOGIN_RATE_PER_USERNAME: failed password checks from addresses the username has not signed
# in from within LOGIN_KNOWN_ADDRESS_DAYS; a locked pair's refusals count for nothing, and a known
# pair is never slowed by others' failures), and each address too (LOGIN_RATE_PER_ADDRESS).
# backend/accounts/signin.py has the order; docs/security.md, "Sign-in", the trade. Addresses come
# from REMOTE_ADDR only, which TrustedProxyMiddleware sets from X-Forwarded-For only when a trusted
# proxy sent it.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=10)
LOGIN_KNOWN_ADDRESS_DAYS = env.int("LOGIN_KNOWN_ADDRESS_DAYS", default=30)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_IPWARE_META_PRECEDENCE_ORDER = ["REMOTE_ADDR"]
AXES_VERBOSE = False
# Never an address alone: every user of a site often shares one address (the site's NAT).
SILENCED_SYSTEM_CHECKS: list[str] = []
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    # Validates nothing: its password_changed hook revokes and audits every new password, whatever
    # path saved it (backend/accounts/services.py).
    {"NAME": "backend.accounts.services.RevokeOnPasswordChange"},
]

# Argon2id passwords, checked in a bounded pool (backend/accounts/hashing.py; docs/security.md,
# "Passwords"). PBKDF2 and scrypt hashes made before still check, and are re-hashed with Argon2id at
# the user's next sign-in or signature.
PASSWORD_HASHERS = [
    "backend.accounts.hashing.Argon2idPasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
# Threads per process that hash passwords (0: the cores): at most this many checks at once, each
# holding Argon2's memory_cost (19 MiB).
PASSWORD_CHECK_WORKERS = env.int("PASSWORD_CHECK_WORKERS", default=0)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# collectstatic's target (the image build, and the `static` compose service for nginx).
STATIC_ROOT = Path(env("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns about a missing root even when it serves from finders
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True  # serve straight from the apps in development, no collectstatic needed

