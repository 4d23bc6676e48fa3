"""What the records API's views share: the error responses they document, the `include_deleted`
switch, the 409 that shows what changed since the client's version, and the DELETE body."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from backend.audit.api import AuditEntrySerializer
from backend.audit.selectors import entries_since_version
from backend.common.api import MAX_VERSION, expected_version
from backend.common.errors import StaleVersion

from .actions import ACTIONS, SIGNED_ACTS

ERROR_RESPONSES = {
    400: OpenApiResponse(description="Invalid input: `{code, message, details}`"),
    403: OpenApiResponse(description="Your role does not allow this, or `four_eyes`: you filed or changed this request"),
    404: OpenApiResponse(description="No such object in your unit"),
    409: OpenApiResponse(
        description="Stale `version` (details: `current_version`, `current` state, `history` since your version) "
        "or an illegal transition"
    ),
}
INCLUDE_DELETED = OpenApiParameter(
    "include_deleted", OpenApiTypes.BOOL, required=False,
    description="Unit admins: list (and fetch) deleted records too (they are kept, never erased)",
)


class SignatureInputSerializer(serializers.Serializer):
    """`signature` in a decision's body. The password is checked and forgotten: never stored,
    logged, put in a job or a task message."""

    password = serializers.CharField(write_only=True, trim_whitespace=False, max_length=4096, style={"input_type": "password"})
    meaning = serializers.CharField(max_length=32, help_text=", ".join(
        f"{a.meaning} ({a.label})" for a in (*ACTIONS.values(), *SIGNED_ACTS.values()) if a.meaning
    ))


def include_deleted(request) -> bool:
    return request.query_params.get("include_deleted") in ("1", "true", "True")


class StaleDetails:
    """Around a write: a 409 `stale_version` answers with the record's current state and the audit
    entries since the version the client sent, so it can show who changed what."""

    def __init__(self, view, obj, sent_version: int | None):
        self.view, self.obj, self.sent = view, obj, sent_version

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, StaleVersion) and self.sent is not None:
            fresh = type(self.obj).objects.filter(pk=self.obj.pk).first() or self.obj
            exc.details = {
                "current_version": fresh.version,
                "current": self.view.get_serializer(fresh).data,
                "history": AuditEntrySerializer(
                    entries_since_version(fresh.pk, self.sent), many=True, context={"reader": self.view.request.user}
                ).data,
            }
        return False


class DeleteSerializer(serializers.Serializer):
    reason = serializers.CharField(
        required=False, allow_blank=True, max_length=2000,
        help_text="Why it is deleted: required (400 `reason_required` without it), kept in the audit trail",
    )
    version = serializers.IntegerField(required=False, min_value=1, max_value=MAX_VERSION)


def delete_input(request) -> tuple[str, int | None]:
    """The reason and version of a DELETE (the service refuses a missing reason, after the role)."""
    data = DeleteSerializer(data=request.data if isinstance(request.data, dict) else {})
    data.is_valid(raise_exception=True)
    return data.validated_data.get("reason", ""), expected_version(request, data.validated_data.get("version"))
