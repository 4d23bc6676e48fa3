"""The audit trail over HTTP: the unit's entries (filtered, newest first, cursor-paginated), a
record's history (served by the records API with `history_response`), and the chain check."""

from __future__ import annotations

import uuid

import django_filters
from django.db.models import Q
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, permissions, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from backend.common.pagination import NewestFirstCursorPagination

from .models import AuditEntry
from .selectors import audit_verify, entries_visible_to, record_history


class ActorSerializer(serializers.Serializer):
    id = serializers.UUIDField(allow_null=True)
    username = serializers.CharField()
    full_name = serializers.CharField()
    role = serializers.CharField()


class ClientSerializer(serializers.Serializer):
    ip = serializers.CharField()
    user_agent = serializers.CharField()


class AuditEntrySerializer(serializers.ModelSerializer):
    """One entry, as the contract names its fields."""

    unit = serializers.UUIDField(source="unit_id")
    actor = serializers.SerializerMethodField()
    client = serializers.SerializerMethodField()
    signature = serializers.SerializerMethodField()

    class Meta:
        model = AuditEntry
        fields = [
            "id", "unit", "position", "at", "actor", "entity", "record_id", "record_number", "action", "version",
            "changes", "reason", "signature", "job_id", "client", "seq", "hash", "prev_hash",
        ]
        read_only_fields = fields


    def get_actor(self, entry: AuditEntry) -> ActorSerializer:
        return {
            "id": entry.actor_id, "username": entry.actor_username,
            "full_name": entry.actor_full_name, "role": entry.actor_role,
        }

    def get_client(self, entry: AuditEntry) -> ClientSerializer:
        return {"ip": entry.client_ip, "user_agent": entry.user_agent}

    def get_signature(self, entry: AuditEntry) -> dict | None:
        return {"id": str(entry.signature_id)} if entry.signature_id else None


class AuditEntryFilter(django_filters.FilterSet):
    entity = django_filters.CharFilter()
    record = django_filters.UUIDFilter(field_name="record_id")
    actor = django_filters.CharFilter(method="filter_actor", help_text="A username or a user id")
    action = django_filters.CharFilter()
    since = django_filters.IsoDateTimeFilter(field_name="at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="at", lookup_expr="lt")
    unit = django_filters.UUIDFilter(field_name="unit_id", help_text="For superusers: one unit's trail")

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


class VerificationSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    entries = serializers.IntegerField()
    first_bad = serializers.DictField(allow_null=True)


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


def history_response(view, record_id: uuid.UUID) -> Response:
    """`GET …/{id}/history/` of a record the view has already found visible: its entries, oldest first."""
    view.cursor_ordering = ("at", "position")
    paginator = NewestFirstCursorPagination()
    page = paginator.paginate_queryset(record_history(record_id), view.request, view=view)
    return paginator.get_paginated_response(AuditEntrySerializer(page, many=True).data)
