"""Small pieces every API view shares."""

from __future__ import annotations

import re

from rest_framework.request import Request

from .errors import ValidationFailed

_ETAG_VERSION = re.compile(r'^\s*(?:W/)?"?([0-9]{1,10})"?\s*$')
# Versions are PositiveIntegerFields: anything larger cannot be a version a client saw.
MAX_VERSION = 2**31 - 1


def expected_version(request: Request, body_version: int | None = None) -> int | None:
    """The version the client last saw: `version` in the body, or the `If-Match` header."""
    if body_version is not None:
        return body_version
    header = request.headers.get("If-Match")
    if not header:
        return None
    match = _ETAG_VERSION.match(header)
    if match is None or not 1 <= int(match.group(1)) <= MAX_VERSION:
        raise ValidationFailed('If-Match must be a version number, e.g. If-Match: "3".', code="invalid_if_match")
    return int(match.group(1))


class ListFiltersForListsOnly:
    """For a viewset: its filter backends (django-filter's FilterSet, `?search=`, `?ordering=`)
    narrow lists only. DRF also runs them in `get_object`, so an action on one object (retrieve,
    update, relocate, approve, ...) built and validated a FilterSet on every call (~1.4 ms of a
    relocation's ~12 ms of CPU), and a stray `?status=` on its URL hid the object (404) or was
    refused (400). One object is found by its id within what the user may see (`get_queryset`)."""

    def filter_queryset(self, queryset):
        if getattr(self, "detail", False):
            return queryset
        return super().filter_queryset(queryset)

