"""The API's one request parser: JSON, bounded in size and depth.

DRF's own JSONParser lets a RecursionError from deeply nested input escape as a 500, and Django
checks DATA_UPLOAD_MAX_MEMORY_SIZE against the declared Content-Length only. This one reads at most
DATA_UPLOAD_MAX_MEMORY_SIZE bytes whatever the headers say (413 `payload_too_large` beyond; the
exception handler gives Django's own RequestDataTooBig the same answer) and answers malformed,
non-UTF-8 or too deeply nested JSON with 400 `parse_error`.
"""

from __future__ import annotations

from django.conf import settings
from rest_framework import exceptions, parsers, status
from rest_framework.utils import json


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(f"The request body is over {limit} bytes.")
        try:
            text = raw.decode((parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET)
            return json.loads(text, parse_constant=json.strict_constant if self.strict else None)
        except (ValueError, RecursionError) as exc:
            # ValueError covers bad JSON, bad UTF-8 and numbers past Python's int-string limit;
            # RecursionError is deep nesting ("[[[[...").
            raise exceptions.ParseError(f"JSON parse error: {type(exc).__name__}") from None
