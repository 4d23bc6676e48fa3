"""Small pieces every API view shares."""

from __future__ import annotations

import re

from rest_framework.request import Request

from .errors import ValidationFailed

_ETAG_VERSION = re.compile(r'^\s*(?:W/)?"?(\d+)"?\s*$')


def expected_version(request: Request, body_version: int | None = None) -> int | None:
    """The version the client last saw: `version` in the body, or the `If-Match` header."""
    if body_version is not None:
        return body_version
    header = request.headers.get("If-Match")
    if not header:
        return None
    match = _ETAG_VERSION.match(header)
    if match is None:
        raise ValidationFailed('If-Match must be a version number, e.g. If-Match: "3".', code="invalid_if_match")
    return int(match.group(1))
