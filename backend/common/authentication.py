"""The API's authentication: SimpleJWT's, with the request trace's `authenticated` stamp
(backend/common/trace.py) taken once a token has been checked and its user loaded."""

from __future__ import annotations

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework_simplejwt.authentication import JWTAuthentication

from .trace import trace_stamp


class TracedJWTAuthentication(JWTAuthentication):
    def authenticate(self, request):
        result = super().authenticate(request)
        if result is not None:
            trace_stamp("authenticated")
        return result


class TracedJWTScheme(SimpleJWTScheme):
    """The OpenAPI schema describes it as the SimpleJWT bearer scheme it is (the extension matches
    its class exactly, not subclasses)."""

    target_class = "backend.common.authentication.TracedJWTAuthentication"
