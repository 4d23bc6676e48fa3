"""REST endpoints for crates: list, create, edit, soft delete, history, and relocate (a job: 202 +
Location). Views are entry points: they validate input with a serializer, call one service or
selector, and render."""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from backend.audit.api import AuditEntrySerializer, history_response
from backend.common.api import MAX_VERSION, ListFiltersForListsOnly, expected_version
from backend.events.snapshot import SeqWatermarkedList
from backend.jobs.api import JobEnvelopeSerializer, job_accepted
from backend.jobs.services import job_submit

from . import selectors, services
from .api_common import ERROR_RESPONSES, INCLUDE_DELETED, DeleteSerializer, StaleDetails, delete_input, include_deleted
from .job_kinds import RELOCATE
from .list_filters import CrateReservationFields, CrateReservationFilter, CrateReservationList
from .models import (
    Crate,
    CrateStatus,
)


class CrateSerializer(CrateReservationFields, serializers.ModelSerializer):
    class Meta:
        model = Crate
        fields = ["id", "crate_number", "unit", "status", "location", "destruction_due", "version",
                  "created_at", "updated_at", "deleted_at", "deleted_by", "delete_reason", "reserved", "reserved_by",
                  "on_hold"]
        read_only_fields = fields
        list_serializer_class = CrateReservationList


class CrateWriteSerializer(serializers.Serializer):
    location = serializers.CharField(max_length=120, required=False, allow_blank=True)
    destruction_due = serializers.DateField(required=False, allow_null=True)
    version = serializers.IntegerField(required=False, min_value=1, max_value=MAX_VERSION, help_text="Optimistic concurrency")
    change_reason = serializers.CharField(
        required=False, allow_blank=True, max_length=2000, help_text="Why (optional for crates; kept in the audit trail)"
    )


class RelocateSerializer(serializers.Serializer):
    location = serializers.CharField(max_length=120)
    version = serializers.IntegerField(required=False, min_value=1, max_value=MAX_VERSION)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class CrateFilter(CrateReservationFilter):
    status = django_filters.MultipleChoiceFilter(choices=CrateStatus.choices)
    destruction_due_before = django_filters.DateFilter(field_name="destruction_due", lookup_expr="lte")

    class Meta:
        model = Crate
        fields = ["status", "location"]


@extend_schema_view(
    create=extend_schema(request=CrateWriteSerializer, responses={201: CrateSerializer, **ERROR_RESPONSES}),
    update=extend_schema(request=CrateWriteSerializer, responses={200: CrateSerializer, **ERROR_RESPONSES}),
    partial_update=extend_schema(request=CrateWriteSerializer, responses={200: CrateSerializer, **ERROR_RESPONSES}),
    list=extend_schema(parameters=[INCLUDE_DELETED]),
)
class CrateViewSet(SeqWatermarkedList, ListFiltersForListsOnly, viewsets.ModelViewSet):
    serializer_class = CrateSerializer
    filterset_class = CrateFilter
    search_fields = ["crate_number", "location"]
    ordering_fields = ["created_at", "updated_at", "crate_number", "destruction_due"]
    ordering = ["-created_at", "id"]

    def get_queryset(self):
        crates = selectors.crates_visible_to(self.request.user, include_deleted=include_deleted(self.request))
        # a relocation's job description names the crate's unit: read with the crate, not after it
        return crates.select_related("unit") if self.action == "relocate" else crates

    def _write_input(self, partial: bool) -> dict:
        data = CrateWriteSerializer(data=self.request.data, partial=partial)
        data.is_valid(raise_exception=True)
        return data.validated_data

    def create(self, request, *args, **kwargs):
        data = self._write_input(partial=False)
        data.pop("version", None)
        data.pop("change_reason", None)
        crate = services.crate_create(actor=request.user, **data)
        return Response(CrateSerializer(crate).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        crate = self.get_object()
        data = self._write_input(partial=kwargs.get("partial", False))
        version = expected_version(request, data.pop("version", None))
        with StaleDetails(self, crate, version):
            crate = services.crate_update(actor=request.user, crate_id=crate.id, expected_version=version, **data)
        return Response(CrateSerializer(crate).data)

    @extend_schema(request=DeleteSerializer, responses={204: None, **ERROR_RESPONSES})
    def destroy(self, request, *args, **kwargs):
        """Soft delete with a reason: the crate is kept and audited, hidden from lists."""
        crate = self.get_object()
        reason, version = delete_input(request)
        with StaleDetails(self, crate, version):
            services.crate_delete(actor=request.user, crate_id=crate.id, expected_version=version, reason=reason)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(parameters=[INCLUDE_DELETED], responses={200: AuditEntrySerializer(many=True)})
    @action(detail=True, methods=["get"])
    def history(self, request, pk=None):
        """The crate's audit entries, oldest first."""
        return history_response(self, self.get_object().id)

    @extend_schema(request=RelocateSerializer, responses={202: JobEnvelopeSerializer, **ERROR_RESPONSES})
    @action(detail=True, methods=["post"])
    def relocate(self, request, pk=None):
        crate = self.get_object()
        data = RelocateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = expected_version(request, data.validated_data.get("version"))
        with StaleDetails(self, crate, version):
            services.crate_relocate_check(
                actor=request.user, crate=crate, location=data.validated_data["location"], expected_version=version
            )
        job = job_submit(
            actor=request.user,
            kind=RELOCATE,
            targets=[crate.id],
            params={
                "location": data.validated_data["location"], "expected_version": version,
                "reason": data.validated_data.get("reason", ""),
            },
            description=f"relocate {crate.unit.code} {crate.crate_number} to {data.validated_data['location']} "
            f"by {request.user.username}",
            unit_id=crate.unit_id,
        )
        return job_accepted(job)
