"""REST endpoints for the three request kinds and send-back records (crates: crates_api.py).

Views are entry points: they validate input with a serializer, call one service or selector, and
render. Create/edit/delete are synchronous; state changes (approve, reject, send back, resubmit,
relocate) are queued as jobs (their kinds are declared in job_kinds.py) and answered with 202 + Location.
"""

from __future__ import annotations

import django_filters
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.filters import OrderingFilter
from rest_framework.response import Response

from backend.accounts.api import signature_throttle
from backend.audit.api import AuditEntrySerializer, SignatureRefSerializer, history_response, signature_ref
from backend.audit.selectors import binding_matches, signatures_of
from backend.common.api import MAX_VERSION, ListFiltersForListsOnly, expected_version
from backend.events.snapshot import SeqWatermarkedList
from backend.jobs.api import JobEnvelopeSerializer, job_accepted

from . import selectors, services
from .actions import SEND_BACK
from .api_common import (
    ERROR_RESPONSES,
    INCLUDE_DELETED,
    DeleteSerializer,
    SignatureInputSerializer,
    StaleDetails,
    delete_input,
    include_deleted,
)
from .decisions import Decision, decide_one
from .lifecycle import REQUEST_KINDS
from .list_filters import RequestCrateNumberFilter, RequestSearchFilter
from .models import (
    DestructionRequest,
    RequestStatus,
    SendBackRecord,
    TransferRequest,
    WithdrawalRequest,
)
from .services.journal import signed_content

# --- requests ---------------------------------------------------------------------------------

ENTITY_OF_MODEL = {kind.model: kind.entity for kind in REQUEST_KINDS.values()}


class SignatureShownSerializer(SignatureRefSerializer):
    """A signature as the record shows it: the entries' signature, and whether it still binds."""

    version = serializers.IntegerField(help_text="The version the signature was applied to")
    matches_record = serializers.BooleanField(
        help_text="False once the record changed after signing: the signature no longer covers what it shows",
    )


class SignedListSerializer(serializers.ListSerializer):
    """Reads the signatures of a whole page, and who contributed to its requests, in one query each."""

    def to_representation(self, data):
        items = list(data.all() if hasattr(data, "all") else data)
        self.child.signatures = signatures_of([item.id for item in items])
        self.child.contributors = self.child.contributors_of(items)
        return super().to_representation(items)


class RequestSerializer(serializers.ModelSerializer):
    crates = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    signatures = serializers.SerializerMethodField()
    contributed = serializers.SerializerMethodField()

    class Meta:
        fields = ["id", "request_number", "unit", "crates", "status", "reason", "created_by", "created_at",
                  "updated_at", "version", "decided_by", "decided_at", "decision_reason",
                  "deleted_at", "deleted_by", "delete_reason", "signatures", "contributed"]
        read_only_fields = fields
        list_serializer_class = SignedListSerializer

    def contributors_of(self, requests) -> dict:
        """{request id: who filed or changed it} for the caller's `contributed` (none without a caller)."""
        if getattr(self.context.get("request"), "user", None) is None:
            return {}
        return selectors.request_contributors(ENTITY_OF_MODEL[self.Meta.model], requests)

    @extend_schema_field(serializers.BooleanField())
    def get_contributed(self, obj) -> bool:
        """True when you filed or changed this request's content: four eyes keeps you from deciding on
        it (the API answers `403 four_eyes`), so a client can say so before anyone signs."""
        found = getattr(self, "contributors", None)
        if found is None:
            found = self.contributors_of([obj])
        user = getattr(self.context.get("request"), "user", None)
        return user is not None and user.id in found.get(obj.id, ())

    @extend_schema_field(SignatureShownSerializer(many=True))
    def get_signatures(self, obj) -> list[dict]:
        """The electronic signatures on this request (Part 11 §11.50), oldest first, each checked
        against the request as it is now (`matches_record`)."""
        found = getattr(self, "signatures", None)
        rows = found.get(obj.id, []) if found is not None else signatures_of([obj.id]).get(obj.id, [])
        if not rows:
            return []
        content = signed_content(obj, [c.id for c in obj.crates.all()])
        return [
            {
                **signature_ref(row.signature), "version": row.version,
                "matches_record": binding_matches(row, version=obj.version, content=content),
            }
            for row in rows
        ]


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
    change_reason = serializers.CharField(
        required=False, allow_blank=True, max_length=2000,
        help_text="Why the submitted request is edited: required by PUT and PATCH, kept in the audit trail",
    )


class TransferRequestWriteSerializer(RequestWriteSerializer):
    destination_unit = serializers.UUIDField()


class DecisionSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    version = serializers.IntegerField(required=False, min_value=1, max_value=MAX_VERSION)
    signature = SignatureInputSerializer(
        required=False, help_text="Required to approve, reject or send back: your password and the decision's meaning",
    )


class RequestFilter(RequestCrateNumberFilter):
    status = django_filters.MultipleChoiceFilter(choices=RequestStatus.choices)
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    crate = django_filters.UUIDFilter(field_name="crates", distinct=True)

    class Meta:
        fields = ["status", "created_by"]


def _request_filter(model):
    return type(f"{model.__name__}Filter", (RequestFilter,), {"Meta": type("Meta", (RequestFilter.Meta,), {"model": model})})


class RequestViewSet(SeqWatermarkedList, ListFiltersForListsOnly, viewsets.ModelViewSet):
    """Shared by the three request kinds; subclasses name the `entity`."""

    entity: str
    write_serializer_class = RequestWriteSerializer
    search_fields = ["request_number", "reason"]  # and its crates' numbers (RequestSearchFilter)
    filter_backends = [DjangoFilterBackend, RequestSearchFilter, OrderingFilter]
    ordering_fields = ["created_at", "updated_at", "request_number", "status"]
    ordering = ["-created_at", "id"]

    def get_queryset(self):
        return selectors.requests_visible_to(self.request.user, self.entity, include_deleted=include_deleted(self.request))

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
        values.pop("change_reason", None)
        obj = services.request_create(entity=self.entity, actor=request.user, **values)
        return Response(self.get_serializer(obj).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        obj = self.get_object()
        values = self._write_input(partial=kwargs.get("partial", False))
        version = expected_version(request, values.pop("version", None))
        with StaleDetails(self, obj, version):
            obj = services.request_update(
                entity=self.entity, actor=request.user, request_id=obj.id, expected_version=version, **values
            )
        return Response(self.get_serializer(obj).data)

    def destroy(self, request, *args, **kwargs):
        """Soft delete with a reason: the request is kept and audited, hidden from lists."""
        obj = self.get_object()
        reason, version = delete_input(request)
        with StaleDetails(self, obj, version):
            services.request_delete(
                entity=self.entity, actor=request.user, request_id=obj.id, expected_version=version, reason=reason
            )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(parameters=[INCLUDE_DELETED], responses={200: AuditEntrySerializer(many=True)})
    @action(detail=True, methods=["get"])
    def history(self, request, pk=None):
        """The request's audit entries, oldest first."""
        return history_response(self, self.get_object().id)

    def _transition(self, request, action_name: str):
        obj = self.get_object()
        data = DecisionSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = expected_version(request, data.validated_data.get("version"))
        signature = data.validated_data.get("signature") or {}
        decision = Decision(
            entity=self.entity, action=action_name, actor=request.user, reason=data.validated_data.get("reason", ""),
            versions={str(obj.id): version}, password=signature.get("password"), meaning=signature.get("meaning"),
            before_signing=signature_throttle(request, self),
        )
        with StaleDetails(self, obj, version):
            job = decide_one(decision, obj)
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
    @action(detail=True, methods=["post"], url_path=SEND_BACK.path)
    def send_back(self, request, pk=None):
        return self._transition(request, SEND_BACK.name)

    @extend_schema(request=DecisionSerializer, responses={202: JobEnvelopeSerializer, **ERROR_RESPONSES})
    @action(detail=True, methods=["post"])
    def resubmit(self, request, pk=None):
        return self._transition(request, "resubmit")


def _request_viewset(entity: str, model, serializer, write_serializer=RequestWriteSerializer):
    schema = extend_schema_view(
        create=extend_schema(request=write_serializer, responses={201: serializer, **ERROR_RESPONSES}),
        update=extend_schema(request=write_serializer, responses={200: serializer, **ERROR_RESPONSES}),
        partial_update=extend_schema(request=write_serializer, responses={200: serializer, **ERROR_RESPONSES}),
        destroy=extend_schema(request=DeleteSerializer, responses={204: None, **ERROR_RESPONSES}),
        list=extend_schema(parameters=[INCLUDE_DELETED]),
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


class SendBackRecordViewSet(
    SeqWatermarkedList, ListFiltersForListsOnly, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    serializer_class = SendBackRecordSerializer
    filterset_fields = ["entity", "request_id"]
    search_fields = ["reason"]
    ordering_fields = ["created_at"]
    ordering = ["-created_at", "id"]

    def get_queryset(self):
        return selectors.sendback_records_visible_to(self.request.user)
