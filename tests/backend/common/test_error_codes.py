"""Every error `code` the API can answer is in ERROR_CODES, the OpenAPI schema's `ErrorCode` union
(backend/common/openapi.py), which the typed client kit's REST types are generated from: a code
raised in the code or documented in docs/api.md but missing from the union would be a code a typed
client cannot name (and one in the union but not in docs/api.md, a code nobody explained)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from django.core.management import call_command

from backend.common import errors
from backend.common.errors import ERROR_CODES

ROOT = Path(__file__).resolve().parents[3]
CODE_LITERALS = (
    re.compile(r'\bcode\s*=\s*"([a-z_]+)"'),  # DomainError(..., code="x"), class attribute code = "x"
    re.compile(r'"code":\s*"([a-z_]+)"'),  # JSON bodies written by hand
    re.compile(r'default_code\s*=\s*"([a-z_]+)"'),
    re.compile(r'AuthenticationFailed\([^)]*,\s*"([a-z_]+)"\)'),  # the token checks' reasons
)


def raised_codes() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "backend").rglob("*.py"):
        if "migrations" in path.parts:
            continue
        text = path.read_text()
        for pattern in CODE_LITERALS:
            found |= set(pattern.findall(text))
    return found


def documented_codes() -> set[str]:
    api = (ROOT / "docs" / "api.md").read_text()
    table = api[api.index("## Errors"):]
    table = table[: table.index("\n## ", 1)]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    # the code column, without its parenthesised notes (`details` and its fields)
    cells = [re.sub(r"\([^()]*\)", "", row.split("|")[2]) for row in rows]
    return {code for cell in cells for code in re.findall(r"`([a-z_]+)`", cell)}


def test_every_code_the_backend_raises_is_in_the_union():
    # Job outcome codes share the literal style but are not API error bodies: none may be missing here either.
    missing = raised_codes() - set(ERROR_CODES)
    assert not missing, f"add to backend/common/errors.py ERROR_CODES (and docs/api.md): {sorted(missing)}"


def test_docs_api_lists_exactly_the_union():
    documented = documented_codes()
    assert {"invalid", "stale_version", "locked_out", "service_unavailable"} <= documented  # the table was read
    assert documented == set(ERROR_CODES)


def test_the_domain_errors_and_drf_codes_are_in_the_union():
    subclasses = {cls.code for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.DomainError)}
    assert subclasses | set(errors._DRF_CODES.values()) <= set(ERROR_CODES)
    assert len(ERROR_CODES) == len(set(ERROR_CODES))


def test_every_operation_of_the_openapi_schema_answers_the_error_body(tmp_path):
    out = tmp_path / "openapi.json"
    call_command("spectacular", format="openapi-json", file=str(out))
    document = json.loads(out.read_text())
    assert document["components"]["schemas"]["ErrorCode"]["enum"] == list(ERROR_CODES)
    assert document["components"]["schemas"]["Error"]["required"] == ["code", "message"]
    operations = [
        op for item in document["paths"].values() for method, op in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]
    assert operations
    for operation in operations:
        error = operation["responses"]["default"]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/Error"}, operation["operationId"]
