"""Domain errors and the API's one error shape: `{"code": "...", "message": "...", "details"?: ...}`.

Services raise DomainError subclasses; the DRF exception handler below renders them (and DRF's own
exceptions) with a stable machine-readable `code`. Tasks record the same code on a failed job.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError as DatabaseInterfaceError
from django.db import OperationalError as DatabaseOperationalError
from django.http import Http404, JsonResponse
from django.views import defaults
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .parsers import PayloadTooLarge

# Every `code` an API error body can carry (docs/api.md, "Errors"): the OpenAPI schema's `ErrorCode`
# (backend/common/openapi.py), so a typed client can switch on it. tests/backend/common check that
# the code and docs/api.md use no other.
ERROR_CODES = (
    # 400
    "invalid", "parse_error", "reason_required", "crates_required", "unknown_crate", "destination_required",
    "destination_same_unit", "location_required", "invalid_if_match", "signature_required", "unit_required",
    "unknown_entity", "unknown_action", "too_many_ids", "ids_required", "unknown_numbers", "inside_retention", "actor_inactive",
    "printed_name_required", "comment_required", "nothing_to_review", "too_many", "error",
    # 401
    "not_authenticated", "authentication_failed", "token_not_valid", "no_active_account", "password_changed",
    "unit_changed", "user_not_found", "user_inactive",
    # 403, 404, 405, 406
    "permission_denied", "four_eyes", "signature_invalid", "not_found", "method_not_allowed", "not_acceptable",
    # 409, 413, 415, 423, 429
    "stale_version", "invalid_transition", "crate_unavailable", "legal_hold", "payload_too_large", "unsupported_media_type",
    "signature_locked", "throttled", "locked_out",
    # 500, 503
    "server_error", "broker_unavailable", "service_unavailable",
)


class DomainError(Exception):
    code = "error"
    status_code = status.HTTP_400_BAD_REQUEST

    def __init__(self, message: str, *, code: str | None = None, details: Any = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class ValidationFailed(DomainError):
    code = "invalid"


class NotFound(DomainError):
    """Also what another unit's object looks like: never 403, never a hint that it exists."""

    code = "not_found"
    status_code = status.HTTP_404_NOT_FOUND


class RoleRequired(DomainError):
    code = "permission_denied"
    status_code = status.HTTP_403_FORBIDDEN


class FourEyes(DomainError):
    """A decision on one's own request: whoever files a request never decides on it."""

    code = "four_eyes"
    status_code = status.HTTP_403_FORBIDDEN


class SignatureRequired(DomainError):
    """A decision without `signature: {password, meaning}` (or with the wrong meaning for it)."""

    code = "signature_required"


class SignatureInvalid(DomainError):
    """The password given to sign is not the signer's."""

    code = "signature_invalid"
    status_code = status.HTTP_403_FORBIDDEN


class SignatureLocked(DomainError):
    """Signing is locked for this user after too many wrong passwords, until a unit admin unlocks."""

    code = "signature_locked"
    status_code = status.HTTP_423_LOCKED


class StaleVersion(DomainError):
    code = "stale_version"
    status_code = status.HTTP_409_CONFLICT


class InvalidTransition(DomainError):
    code = "invalid_transition"
    status_code = status.HTTP_409_CONFLICT


class CrateUnavailable(DomainError):
    code = "crate_unavailable"
    status_code = status.HTTP_409_CONFLICT


class LegalHold(DomainError):
    """A crate under legal hold: no destruction (or transfer out of the unit) until the hold is released."""

    code = "legal_hold"
    status_code = status.HTTP_409_CONFLICT


class BrokerUnavailable(DomainError):
    code = "broker_unavailable"
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE


_DRF_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    exceptions.ParseError: "parse_error",
    exceptions.ValidationError: "invalid",
}


# A backing service that is briefly away (a restart, a failover): 503, never a 500.
UNAVAILABLE_ERRORS = (RedisConnectionError, RedisTimeoutError, DatabaseOperationalError, DatabaseInterfaceError)


class BackendUnavailable(DomainError):
    """Redis or the database could not be reached: a passing outage, not a bug."""

    code = "service_unavailable"
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, UNAVAILABLE_ERRORS):
        exc = BackendUnavailable("A backing service is unavailable; nothing was changed. Try again shortly.")
    if isinstance(exc, DomainError):
        return Response(exc.as_dict(), status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge(f"The request body is over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.")
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    # A subclass with a code of its own (locked_out is a Throttled, say) keeps it.
    code = _DRF_CODES.get(type(exc)) or getattr(exc, "default_code", None) or "error"
    if isinstance(exc, exceptions.ValidationError):
        body = {"code": code, "message": "The request is invalid.", "details": response.data}
    else:
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else response.data
        body = {"code": code, "message": str(detail)}
        # simplejwt puts its reason (token_not_valid, ...) in the detail's code
        if isinstance(exc.detail, dict) and "code" in exc.detail:
            body["code"] = str(exc.detail["code"])
        elif getattr(exc.detail, "code", None) and code == "authentication_failed":
            body["code"] = str(exc.detail.code)
    response.data = body
    return response


# Django's own error pages (a URL no view matches, an unhandled exception) bypass DRF; under /api/
# they answer in the same JSON shape, the rest of the site keeps its HTML pages.
def page_not_found(request, exception=None):
    if request.path.startswith("/api/"):
        return JsonResponse({"code": "not_found", "message": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if request.path.startswith("/api/"):
        return JsonResponse({"code": "server_error", "message": "Internal server error."}, status=500)
    return defaults.server_error(request)
