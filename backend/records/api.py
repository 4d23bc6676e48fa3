"""REST endpoints for crates, the three request kinds and send-back records.

Views are entry points: they validate input with a serializer, call one service or selector, and
render. Create/edit/delete are synchronous; state changes (approve, reject, send back, resubmit,
relocate) are queued as jobs (their kinds are declared in jobs.py) and answered with 202 + Location.
"""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from backend.common.api import MAX_VERSION, expected_version
from backend.jobs.api import JobEnvelopeSerializer, job_accepted
from backend.jobs.services import job_submit

from . import selectors, services
from .jobs import RELOCATE, TRANSITION_KINDS
from .models import (
    Crate,
    CrateStatus,
    DestructionRequest,
    RequestStatus,
    SendBackRecord,
    TransferRequest,
    WithdrawalRequest,
)

ERROR_RESPONSES = {
    400: OpenApiResponse(description="Invalid input: `{code, message, details}`"),
    403: OpenApiResponse(description="Your role does not allow this"),
    404: OpenApiResponse(description="No such object in your unit"),
    409: OpenApiResponse(description="Stale `version` or an illegal transition"),
}

# --- crates -----------------------------------------------------------------------------------


class CrateSerializer(serializers.ModelSerializer):
    class Meta:
        model = Crate
        fields = ["id", "crate_number", "unit", "status", "location", "destruction_due", "version",
                  "created_at", "updated_at"]
        read_only_fields = fields


class CrateWriteSerializer(serializers.Serializer):
    location = serializers.CharField(max_length=120, required=False, allow_blank=True)
    destruction_due = serializers.DateField(required=False, allow_null=True)
    version = serializers.IntegerField(required=False, min_value=1, max_value=MAX_VERSION, help_text="Optimistic concurrency")


class RelocateSerializer(serializers.Serializer):
    location = serializers.CharField(max_length=120)
    version = serializers.IntegerField(required=False, min_value=1, max_value=MAX_VERSION)


class CrateFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=CrateStatus.choices)
    destruction_due_before = django_filters.DateFilter(field_name="destruction_due", lookup_expr="lte")

    class Meta:
        model = Crate
        fields = ["status", "location"]


@extend_schema_view(
    create=extend_schema(request=CrateWriteSerializer, responses={201: CrateSerializer, **ERROR_RESPONSES}),
    update=extend_schema(request=CrateWriteSerializer, responses={200: CrateSerializer, **ERROR_RESPONSES}),
    partial_update=extend_schema(request=CrateWriteSerializer, responses={200: CrateSerializer, **ERROR_RESPONSES}),
    destroy=extend_schema(responses={204: None, **ERROR_RESPONSES}),
)
class CrateViewSet(viewsets.ModelViewSet):
    serializer_class = CrateSerializer
    filterset_class = CrateFilter
    search_fields = ["crate_number", "location"]
    ordering_fields = ["created_at", "updated_at", "crate_number", "destruction_due"]
    ordering = ["-created_at", "id"]

    def get_queryset(self):
        return selectors.crates_visible_to(self.request.user)

    def _write_input(self, partial: bool) -> dict:
        data = CrateWriteSerializer(data=self.request.data, partial=partial)
        data.is_valid(raise_exception=True)
        return data.validated_data

    def create(self, request, *args, **kwargs):
        data = self._write_input(partial=False)
        data.pop("version", None)
        crate = services.crate_create(actor=request.user, **data)
        return Response(CrateSerializer(crate).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        crate = self.get_object()
        data = self._write_input(partial=kwargs.get("partial", False))
        version = expected_version(request, data.pop("version", None))
        crate = services.crate_update(actor=request.user, crate_id=crate.id, expected_version=version, **data)
        return Response(CrateSerializer(crate).data)

    def destroy(self, request, *args, **kwargs):
        crate = self.get_object()
        services.crate_delete(actor=request.user, crate_id=crate.id, expected_version=expected_version(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=RelocateSerializer, responses={202: JobEnvelopeSerializer, **ERROR_RESPONSES})
    @action(detail=True, methods=["post"])
    def relocate(self, request, pk=None):
        crate = self.get_object()
        data = RelocateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = expected_version(request, data.validated_data.get("version"))
        services.crate_relocate_check(
            actor=request.user, crate=crate, location=data.validated_data["location"], expected_version=version
        )
        job = job_submit(
            actor=request.user,
            kind=RELOCATE,
            targets=[crate.id],
            params={"location": data.validated_data["location"], "expected_version": version},
            description=f"relocate {crate.crate_number} to {data.validated_data['location']} by {request.user.username}",
            unit_id=crate.unit_id,
        )
        return job_accepted(job)


# --- requests ---------------------------------------------------------------------------------


class RequestSerializer(serializers.ModelSerializer):
    crates = serializers.PrimaryKeyRelatedField(many=True, read_only=True)

    class Meta:
        fields = ["id", "request_number", "unit", "crates", "status", "reason", "decision_reason",
                  "created_by", "created_at", "updated_at", "version"]
        read_only_fields = fields


class WithdrawalRequestSerializer(RequestSerializer):
    class Meta(RequestSerializer.Meta):
        model = WithdrawalRequest


class DestructionRequestSerializer(RequestSerializer):
    class Meta(RequestSerializer.Meta):
        model = DestructionRequest


class TransferRequestSerializer(RequestSerializer):
    class Meta(RequestSerializer.Meta):
        model = TransferRequest
        fields = [*RequestSerializer.Meta.fields, "destination_unit"]
        read_only_fields = fields


class RequestWriteSerializer(serializers.Serializer):
    crates = serializers.ListField(child=serializers.UUIDField(), allow_empty=False, max_length=1000)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    version = serializers.IntegerField(required=False, min_value=1, max_value=MAX_VERSION, help_text="Optimistic concurrency")


class TransferRequestWriteSerializer(RequestWriteSerializer):
    destination_unit = serializers.UUIDField()


class DecisionSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    version = serializers.IntegerField(required=False, min_value=1, max_value=MAX_VERSION)


class RequestFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=RequestStatus.choices)
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    crate = django_filters.UUIDFilter(field_name="crates", distinct=True)

    class Meta:
        fields = ["status", "created_by"]


def _request_filter(model):
    return type(f"{model.__name__}Filter", (RequestFilter,), {"Meta": type("Meta", (RequestFilter.Meta,), {"model": model})})


class RequestViewSet(viewsets.ModelViewSet):
    """Shared by the three request kinds; subclasses name the `entity`."""

    entity: str
    write_serializer_class = RequestWriteSerializer
    search_fields = ["request_number", "reason"]
    ordering_fields = ["created_at", "updated_at", "request_number", "status"]
    ordering = ["-created_at", "id"]

    def get_queryset(self):
        return selectors.requests_visible_to(self.request.user, self.entity)

    def _write_input(self, partial: bool) -> dict:
        data = self.write_serializer_class(data=self.request.data, partial=partial)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        if "crates" in values:
            values["crate_ids"] = values.pop("crates")
        if "destination_unit" in values:
            values["destination_unit_id"] = values.pop("destination_unit")
        return values

    def create(self, request, *args, **kwargs):
        values = self._write_input(partial=False)
        values.pop("version", None)
        obj = services.request_create(entity=self.entity, actor=request.user, **values)
        return Response(self.get_serializer(obj).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        obj = self.get_object()
        values = self._write_input(partial=kwargs.get("partial", False))
        version = expected_version(request, values.pop("version", None))
        obj = services.request_update(
            entity=self.entity, actor=request.user, request_id=obj.id, expected_version=version, **values
        )
        return Response(self.get_serializer(obj).data)

    def destroy(self, request, *args, **kwargs):
        obj = self.get_object()
        services.request_delete(
            entity=self.entity, actor=request.user, request_id=obj.id, expected_version=expected_version(request)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _transition(self, request, action_name: str):
        obj = self.get_object()
        data = DecisionSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        reason = data.validated_data.get("reason", "")
        version = expected_version(request, data.validated_data.get("version"))
        services.request_transition_check(
            entity=self.entity, action=action_name, actor=request.user, request=obj,
            reason=reason, expected_version=version,
        )
        job = job_submit(
            actor=request.user,
            kind=TRANSITION_KINDS[self.entity, action_name],
            targets=[obj.id],
            params={"reason": reason, "expected_version": version},
            description=f"{action_name.replace('_', ' ')} {obj.request_number} by {request.user.username}",
            unit_id=obj.unit_id,
        )
        return job_accepted(job)

    @extend_schema(request=DecisionSerializer, responses={202: JobEnvelopeSerializer, **ERROR_RESPONSES})
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        return self._transition(request, "approve")

    @extend_schema(request=DecisionSerializer, responses={202: JobEnvelopeSerializer, **ERROR_RESPONSES})
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        return self._transition(request, "reject")

    @extend_schema(request=DecisionSerializer, responses={202: JobEnvelopeSerializer, **ERROR_RESPONSES})
    @action(detail=True, methods=["post"], url_path="send-back")
    def send_back(self, request, pk=None):
        return self._transition(request, "send_back")

    @extend_schema(request=DecisionSerializer, responses={202: JobEnvelopeSerializer, **ERROR_RESPONSES})
    @action(detail=True, methods=["post"])
    def resubmit(self, request, pk=None):
        return self._transition(request, "resubmit")


def _request_viewset(entity: str, model, serializer, write_serializer=RequestWriteSerializer):
    schema = extend_schema_view(
        create=extend_schema(request=write_serializer, responses={201: serializer, **ERROR_RESPONSES}),
        update=extend_schema(request=write_serializer, responses={200: serializer, **ERROR_RESPONSES}),
        partial_update=extend_schema(request=write_serializer, responses={200: serializer, **ERROR_RESPONSES}),
        destroy=extend_schema(responses={204: None, **ERROR_RESPONSES}),
    )
    cls = type(
        f"{model.__name__}ViewSet",
        (RequestViewSet,),
        {
            "entity": entity,
            "serializer_class": serializer,
            "write_serializer_class": write_serializer,
            "filterset_class": _request_filter(model),
            "__doc__": f"{model._meta.verbose_name.capitalize()}s of your unit.",
        },
    )
    return schema(cls)


WithdrawalRequestViewSet = _request_viewset("withdrawal", WithdrawalRequest, WithdrawalRequestSerializer)
DestructionRequestViewSet = _request_viewset("destruction", DestructionRequest, DestructionRequestSerializer)
TransferRequestViewSet = _request_viewset(
    "transfer", TransferRequest, TransferRequestSerializer, TransferRequestWriteSerializer
)


# --- send-back records ------------------------------------------------------------------------


class SendBackRecordSerializer(serializers.ModelSerializer):
    class Meta:
        model = SendBackRecord
        fields = ["id", "entity", "request_id", "reason", "created_by", "created_at"]
        read_only_fields = fields


class SendBackRecordViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = SendBackRecordSerializer
    filterset_fields = ["entity", "request_id"]
    search_fields = ["reason"]
    ordering_fields = ["created_at"]
    ordering = ["-created_at", "id"]

    def get_queryset(self):
        return selectors.sendback_records_visible_to(self.request.user)
