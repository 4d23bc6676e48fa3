"""The REST API: Django REST framework, SimpleJWT, the OpenAPI schema."""

from __future__ import annotations

from datetime import timedelta

from .core import SECRET_KEY
from .environment import env

# --- REST framework -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # SimpleJWT's, with our password stamp (a hasher upgrade must not sign users out) and the
        # request trace's `authenticated` stamp (backend/common/trace.py)
        "backend.accounts.tokens.StampedJWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "backend.common.pagination.DefaultPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "backend.common.errors.exception_handler",
    # JSON only, bounded by DATA_UPLOAD_MAX_MEMORY_SIZE and nesting depth (backend/common/parsers.py).
    "DEFAULT_PARSER_CLASSES": ["backend.common.parsers.JSONParser"],
    # Counted in the shared cache (Redis), so a limit holds across every web process.
    "DEFAULT_THROTTLE_RATES": {
        "ws_ticket": env("WS_TICKET_RATE", default="60/min"),
        "bulk": env("BULK_RATE", default="30/hour"),
        "login_address": env("LOGIN_RATE_PER_ADDRESS", default="30/min"),
        "login_username": env("LOGIN_RATE_PER_USERNAME", default="20/min"),
        # Signed decisions per user: each costs a password hash (hundreds of ms of CPU in production).
        "signature": env("SIGNATURE_RATE", default="30/min"),
    },
    # Throttles key on REMOTE_ADDR alone, never a client's X-Forwarded-For: REMOTE_ADDR is the real
    # peer, or the client a trusted proxy names (TRUSTED_PROXIES, backend/common/proxies.py).
    "NUM_PROXIES": 0,
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SIMPLE_JWT = {
    # JWT_ACCESS_SECONDS, when set, wins: token-expiry tests (tests/browser) need lifetimes of seconds.
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=env.int("JWT_ACCESS_SECONDS", default=0))
    or timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=1)),
    "TOKEN_OBTAIN_SERIALIZER": "backend.accounts.tokens.UnitTokenObtainPairSerializer",
    "TOKEN_REFRESH_SERIALIZER": "backend.accounts.tokens.UnitTokenRefreshSerializer",
    "UPDATE_LAST_LOGIN": False,
    # JWTs have a key of their own: rotating it signs everyone out without touching SECRET_KEY.
    "SIGNING_KEY": env("JWT_SIGNING_KEY", default="") or SECRET_KEY,
    # Refresh tokens work once (blacklisted on use) and are revoked on password change,
    # deactivation and unit moves (backend/accounts/services.py).
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    # Every token carries a hash of the user's password hash: a new password ends them all.
    "CHECK_REVOKE_TOKEN": True,
}

# Who may read the OpenAPI schema and Swagger UI (/api/schema/, /api/docs/): "public", "staff"
# (Django staff, signed in to the admin site or with a token; production's default) or "off".
API_DOCS = env("API_DOCS", default="public")

SPECTACULAR_SETTINGS = {
    "TITLE": "Records realtime API",
    "DESCRIPTION": (
        "Withdrawal, destruction and transfer requests for archived document crates. "
        "State changes run as jobs; every durable change is pushed on `/ws/updates/`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Every operation's error body, `Error` with its `ErrorCode` union (the typed client kit's REST types).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "backend.common.openapi.error_responses"],
    "ENUM_NAME_OVERRIDES": {
        "RequestStatusEnum": "backend.records.models.RequestStatus",
        "CrateStatusEnum": "backend.records.models.CrateStatus",
        "JobStatusEnum": "backend.jobs.models.JobStatus",
        "RoleEnum": "backend.accounts.models.Role",
    },
}

