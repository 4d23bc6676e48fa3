"""The OpenAPI schema's error bodies (drf-spectacular postprocessing hook, SPECTACULAR_SETTINGS).

Every error the API answers has one shape, `{"code", "message", "details"?}` (backend/common/errors.py);
the schema names it `Error`, its `code` the union `ErrorCode`, and gives every operation a `default`
response of it. A typed client (clients/js, docs/client.md) then knows each error's codes without
typing them by hand.
"""

from __future__ import annotations

from typing import Any

from .errors import ERROR_CODES

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

ERROR_CODE_SCHEMA: dict[str, Any] = {
    "type": "string",
    "enum": list(ERROR_CODES),
    "description": "The error's stable, machine-readable code (docs/api.md, Errors).",
}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"$ref": "#/components/schemas/ErrorCode"},
        "message": {"type": "string"},
        "details": {"description": "Per code: the fields that failed (`invalid`), the current record (`stale_version`), ..."},
    },
}


def error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorCode"] = ERROR_CODE_SCHEMA
    schemas["Error"] = ERROR_SCHEMA
    reference = {"$ref": "#/components/schemas/Error"}
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in HTTP_METHODS:
                continue
            responses = operation.setdefault("responses", {})
            responses.setdefault("default", {
                "description": "An error: `{code, message, details?}` (docs/api.md, Errors).",
                "content": {"application/json": {"schema": reference}},
            })
    return result
