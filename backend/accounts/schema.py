"""The OpenAPI description of our JWT authentication: drf-spectacular's SimpleJWT scheme (a bearer
JWT) for StampedJWTAuthentication, which differs from SimpleJWT's only in the password stamp it
checks (accounts/tokens.py). Imported when the app is ready."""

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme


class StampedJWTScheme(SimpleJWTScheme):
    target_class = "backend.accounts.tokens.StampedJWTAuthentication"
