"""The audit trail over HTTP: the unit's entries (filtered, newest first, cursor-paginated), a
record's history (served by the records API with `history_response`), the chain check and the
signed checkpoints."""

from __future__ import annotations

import uuid

import django_filters
from django.core.handlers.asgi import ASGIRequest
from django.db.models import Q
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import exceptions, mixins, permissions, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from backend.common.pagination import NewestFirstCursorPagination

from .checkpoints import REVIEWER_ROLES
from .export import FORMATS, MEDIA_TYPES, achunks, export_chunks, export_filename, unit_code
from .models import AuditEntry, Signature
from .selectors import audit_verify, checkpoints_visible_to, entries_visible_to, record_history


class ActorSerializer(serializers.Serializer):
    id = serializers.UUIDField(allow_null=True)
    username = serializers.CharField()
    full_name = serializers.CharField()
    role = serializers.CharField()


class ClientSerializer(serializers.Serializer):
    ip = serializers.CharField()
    user_agent = serializers.CharField()


class SignatureRefSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    meaning = serializers.CharField()
    signed_at = serializers.DateTimeField()
    signer = serializers.CharField()
    full_name = serializers.CharField()


def signature_ref(signature: Signature) -> dict:
    """A signature where an entry or a record shows it: who signed, when, meaning what."""
    return {
        "id": str(signature.id), "meaning": signature.meaning,
        "signed_at": serializers.DateTimeField().to_representation(signature.signed_at),
        "signer": signature.signer_username, "full_name": signature.signer_full_name,
    }


class AuditEntrySerializer(serializers.ModelSerializer):
    """One entry, as the contract names its fields."""

    unit = serializers.UUIDField(source="unit_id")
    actor = serializers.SerializerMethodField()
    client = serializers.SerializerMethodField()
    signature = serializers.SerializerMethodField()
    reviewed = serializers.SerializerMethodField()

    class Meta:
        model = AuditEntry
        fields = [
            "id", "unit", "position", "at", "actor", "entity", "record_id", "record_number", "action", "version",
            "changes", "reason", "signature", "signature_digest", "job_id", "client", "seq", "hash", "prev_hash",
            "reviewed",
        ]
        read_only_fields = fields


    def get_actor(self, entry: AuditEntry) -> ActorSerializer:
        return {
            "id": entry.actor_id, "username": entry.actor_username,
            "full_name": entry.actor_full_name, "role": entry.actor_role,
        }

    def get_reviewed(self, entry: AuditEntry) -> bool:
        """Signed off by an audit-trail review of someone other than the entry's actor."""
        return bool(getattr(entry, "reviewed", False))

    def get_client(self, entry: AuditEntry) -> ClientSerializer:
        return {"ip": entry.client_ip, "user_agent": entry.user_agent}

    def to_representation(self, entry: AuditEntry) -> dict:
        """Another unit's entry (a transferred record's history, read by the unit it went to) shows
        no `client`: where that unit's people work from is not the reader's business."""
        document = super().to_representation(entry)
        reader = self.context.get("reader")
        if reader is not None and not reader.is_superuser and entry.unit_id != getattr(reader, "unit_id", None):
            document.pop("client", None)
        return document

    @extend_schema_field(SignatureRefSerializer(allow_null=True))
    def get_signature(self, entry: AuditEntry) -> dict | None:
        return signature_ref(entry.signature) if entry.signature_id else None


class AuditEntryFilter(django_filters.FilterSet):
    entity = django_filters.CharFilter()
    record = django_filters.UUIDFilter(field_name="record_id")
    actor = django_filters.CharFilter(method="filter_actor", help_text="A username or a user id")
    action = django_filters.CharFilter()
    since = django_filters.IsoDateTimeFilter(field_name="at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="at", lookup_expr="lt")
    unit = django_filters.UUIDFilter(field_name="unit_id", help_text="For superusers: one unit's trail")
    reviewed = django_filters.BooleanFilter(help_text="false: the entries no review has signed off yet")

    class Meta:
        model = AuditEntry
        fields = []

    def filter_actor(self, queryset, name, value):
        try:
            return queryset.filter(Q(actor_id=uuid.UUID(value)) | Q(actor_username=value))
        except ValueError:
            return queryset.filter(actor_username=value)


class IsUnitAdmin(permissions.BasePermission):
    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and (user.is_superuser or user.role == "admin"))


class IsAuditReviewer(permissions.BasePermission):
    """Whoever REVIEWER_ROLES names (unit admins and QA), and superusers."""

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and (user.is_superuser or user.role in REVIEWER_ROLES))


class CheckpointSerializer(serializers.Serializer):
    """A signed checkpoint: Ed25519 (`key_id`) over the canonical JSON of id, unit, position, hash,
    purged_through and at (docs/audit.md, "Checkpoints")."""

    id = serializers.UUIDField()
    unit = serializers.UUIDField(source="unit_id")
    unit_code = serializers.CharField()
    position = serializers.IntegerField()
    hash = serializers.CharField()
    purged_through = serializers.IntegerField()
    at = serializers.DateTimeField()
    key_id = serializers.CharField()
    signature = serializers.CharField()


class VerificationSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    entries = serializers.IntegerField()
    first_bad = serializers.DictField(allow_null=True)
    sink = serializers.CharField(
        help_text="Whether the checkpoints were compared with the sink's copy outside the database: `compared`, "
        "`not configured`, or why not (a syslog sink without AUDIT_CHECKPOINT_SINK_COPY: then a database restored "
        "from an older copy, or stripped of its newest checkpoints and the entries they covered, is not caught)",
    )


class _ExportRenderer(BaseRenderer):
    """Names an export format for DRF's content negotiation (`?format=`, `Accept`). The export streams
    its own response, so all a renderer is ever given is an error: it renders it as JSON, in the
    API's one error shape, and says so in Content-Type."""

    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        response = (renderer_context or {}).get("response")
        if response is not None:
            response["Content-Type"] = "application/json"
        return JSONRenderer().render(data)


class CSVExportRenderer(_ExportRenderer):
    media_type = MEDIA_TYPES["csv"]
    format = "csv"


class NDJSONExportRenderer(_ExportRenderer):
    media_type = MEDIA_TYPES["ndjson"]
    format = "ndjson"


class ExportNegotiation(DefaultContentNegotiation):
    """`?format=` other than csv or ndjson: 400 `invalid` naming the choices (DRF would answer 404)."""

    def filter_renderers(self, renderers, format):
        chosen = [renderer for renderer in renderers if renderer.format == format]
        if not chosen:
            raise exceptions.ValidationError({"format": [f"One of {', '.join(FORMATS)}."]})
        return chosen


class AuditTrailViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Your unit's audit trail, newest first. Entries are never changed or deleted."""

    serializer_class = AuditEntrySerializer
    filterset_class = AuditEntryFilter
    pagination_class = NewestFirstCursorPagination
    filter_backends = [django_filters.rest_framework.DjangoFilterBackend]

    # Newest first: by time, then the chain's order within one moment (a bulk decision's entries
    # share it). `position` alone would be the chain's order, but time is what filters use.
    cursor_ordering = ("-at", "-position")

    def get_queryset(self):
        return entries_visible_to(self.request.user)

    @extend_schema(request=None, responses={200: VerificationSerializer, 403: OpenApiResponse(description="Unit admins only")})
    @action(detail=False, methods=["get"], permission_classes=[IsUnitAdmin], filterset_class=None, pagination_class=None)
    def verify(self, request):
        """Recompute your unit's hash chain (every unit's, for a superuser) and report the first
        broken link."""
        units = None if request.user.is_superuser else [request.user.unit_id]
        return Response(audit_verify(units).as_dict())

    @extend_schema(request=None, filters=False, responses={200: CheckpointSerializer(many=True),
                                                       403: OpenApiResponse(description="Unit admins and QA only")})
    @action(detail=False, methods=["get"], permission_classes=[IsAuditReviewer], filterset_class=None)
    def checkpoints(self, request):
        """Your unit's signed checkpoints (every unit's, for a superuser), newest first, with their
        signatures: what anyone holding the public key can check the trail against."""
        page = self.paginate_queryset(checkpoints_visible_to(request.user))
        return self.get_paginated_response(CheckpointSerializer(page, many=True).data)

    @extend_schema(
        filters=True,  # the list's filters, documented here too
        responses={
            (200, MEDIA_TYPES["csv"]): OpenApiResponse(OpenApiTypes.STR, description="A header row, then one row an entry"),
            (200, MEDIA_TYPES["ndjson"]): OpenApiResponse(OpenApiTypes.STR, description="One entry (JSON) a line"),
            400: OpenApiResponse(description="An unknown format or filter value"),
        }
    )
    @action(
        detail=False, methods=["get"], pagination_class=None,
        renderer_classes=[CSVExportRenderer, NDJSONExportRenderer], content_negotiation_class=ExportNegotiation,
    )
    def export(self, request):
        """Download the trail the list shows (the same filters), as CSV or NDJSON (`?format=`, or
        `Accept`; CSV by default), oldest first in chain order (by unit, then position): streamed,
        constant memory however long the trail (docs/audit.md, "Export")."""
        entries = self.filter_queryset(self.get_queryset())
        fmt = request.accepted_renderer.format
        if request.user.is_superuser:
            try:
                unit = uuid.UUID(request.query_params["unit"])
            except (KeyError, ValueError):
                unit = None
        else:
            unit = request.user.unit_id
        chunks = export_chunks(entries, fmt)
        # Daphne serves an asynchronous iterator as it goes (a synchronous one it would collect first).
        content = achunks(chunks) if isinstance(request._request, ASGIRequest) else chunks
        response = StreamingHttpResponse(content, content_type=f"{MEDIA_TYPES[fmt]}; charset=utf-8")
        filename = export_filename(fmt, unit_code(unit) if unit else None)
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        response["Cache-Control"] = "no-store"
        return response


def history_response(view, record_id: uuid.UUID) -> Response:
    """`GET …/{id}/history/` of a record the view has already found visible: its entries, oldest first."""
    view.cursor_ordering = ("at", "position")
    paginator = NewestFirstCursorPagination()
    page = paginator.paginate_queryset(record_history(record_id), view.request, view=view)
    return paginator.get_paginated_response(
        AuditEntrySerializer(page, many=True, context={"reader": view.request.user}).data
    )
