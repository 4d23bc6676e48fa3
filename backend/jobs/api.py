"""Jobs over HTTP: the list (light rows), the detail (with targets and per-target outcomes, streamed
for a bulk job), a job's outcomes page by page, and POST /api/bulk-actions/."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.utils.encoders import JSONEncoder
from rest_framework.views import APIView

from backend.accounts.api import SignatureInputSerializer, decision_sign
from backend.accounts.signatures import signature_meaning
from backend.common.api import MAX_VERSION, ListFiltersForListsOnly

from . import registry
from .models import Job, JobOutcome, JobStatus
from .services import bulk_check, bulk_submit

OUTCOME_PAGE = 2000  # rows per read while streaming a bulk job's outcomes


class ProgressSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    done = serializers.IntegerField()
    failed = serializers.IntegerField()


class JobListSerializer(serializers.ModelSerializer):
    """A job as the list shows it: what, whose, how far. Targets and outcomes are in the detail."""

    progress = ProgressSerializer()

    class Meta:
        model = Job
        fields = ["id", "kind", "status", "progress", "error", "requested_by", "created_at", "started_at", "finished_at"]
        read_only_fields = fields


class JobSerializer(JobListSerializer):
    class Meta(JobListSerializer.Meta):
        fields = [*JobListSerializer.Meta.fields, "result", "targets"]
        read_only_fields = fields


class JobEnvelopeSerializer(serializers.Serializer):
    job = JobSerializer()


class OutcomeSerializer(serializers.ModelSerializer):
    status = serializers.SerializerMethodField()

    class Meta:
        model = JobOutcome
        fields = ["target", "status", "code", "message"]
        read_only_fields = fields

    def get_status(self, outcome: JobOutcome) -> str:
        return "succeeded" if outcome.succeeded else "failed"


def job_accepted(job: Job) -> Response:
    """202 Accepted with the job and where to follow it."""
    return Response(
        {"job": JobSerializer(job).data},
        status=status.HTTP_202_ACCEPTED,
        headers={"Location": f"/api/jobs/{job.id}/"},
    )


def _outcome_page(job_id, after: str, failed_only: bool) -> list[JobOutcome]:
    rows = JobOutcome.objects.filter(job_id=job_id, target__gt=after)
    if failed_only:
        rows = rows.filter(succeeded=False)
    return list(rows.order_by("target")[:OUTCOME_PAGE])


async def _bulk_detail(head: dict, job_id, outcomes: str) -> AsyncIterator[bytes]:
    """The detail of a bulk job as JSON, written as it is read: `result.outcomes` ({target:
    outcome}) comes from the ledger a page at a time (keyset on target), so a 20,000-id job costs
    the server constant memory. Asynchronous, so Daphne streams it instead of collecting it."""
    yield json.dumps(head, cls=JSONEncoder)[:-1].encode()
    if outcomes == "none":
        yield b',"result":null}'
        return
    yield b',"result":{"outcomes":{'
    after, separator = "", b""
    while rows := await sync_to_async(_outcome_page)(job_id, after, outcomes == "failed"):
        yield separator + b",".join(
            (json.dumps(row.target) + ":" + json.dumps(row.as_outcome())).encode() for row in rows
        )
        separator, after = b",", rows[-1].target
    yield b"}}}"


OUTCOMES_PARAMETER = OpenApiParameter(
    "outcomes", OpenApiTypes.STR, enum=["all", "failed", "none"], required=False,
    description="A bulk job's per-target outcomes in `result.outcomes`: all (default), only the failed ones, or none",
)


class JobViewSet(ListFiltersForListsOnly, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Jobs of your unit. A job of another unit is a plain 404."""

    serializer_class = JobSerializer
    filterset_fields = ["status", "kind"]
    ordering_fields = ["created_at"]
    ordering = ["-created_at", "id"]

    def get_queryset(self):
        user = self.request.user
        jobs = Job.objects.all()
        if self.action == "list":
            jobs = jobs.defer("targets", "params", "result")
        # getattr: an anonymous user (drf-spectacular's schema generation) sees nothing.
        return jobs if user.is_superuser else jobs.filter(unit_id=getattr(user, "unit_id", None))

    def get_serializer_class(self):
        return JobListSerializer if self.action == "list" else super().get_serializer_class()

    @extend_schema(parameters=[OUTCOMES_PARAMETER])
    def retrieve(self, request, *args, **kwargs):
        job = self.get_object()
        kind = registry.find(job.kind)
        if kind is None or not kind.bulk:
            return Response(JobSerializer(job).data)
        outcomes = request.query_params.get("outcomes", "all")
        if outcomes not in ("all", "failed", "none"):
            raise exceptions.ValidationError({"outcomes": ["One of all, failed, none."]})
        head = {**JobListSerializer(job).data, "targets": job.targets}
        return StreamingHttpResponse(_bulk_detail(head, job.id, outcomes), content_type="application/json")

    @extend_schema(
        responses=OutcomeSerializer(many=True),
        parameters=[OpenApiParameter("status", OpenApiTypes.STR, enum=["succeeded", "failed"], required=False)],
    )
    @action(detail=True, methods=["get"])
    def outcomes(self, request, pk=None):
        """A bulk job's per-target outcomes, page by page (`?status=failed` for the refusals)."""
        # Not get_object(): the list's filters (`?status=` of the job) must not apply to the job here.
        job = get_object_or_404(self.get_queryset(), pk=pk)
        rows = job.outcomes.order_by("target")
        wanted = request.query_params.get("status")
        if wanted not in (None, "succeeded", "failed"):
            raise exceptions.ValidationError({"status": ["One of succeeded, failed."]})
        if wanted is not None:
            rows = rows.filter(succeeded=wanted == "succeeded")
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(OutcomeSerializer(page, many=True).data)


class BulkItemSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    version = serializers.IntegerField(min_value=1, max_value=MAX_VERSION, help_text="The version the decider saw")


class BulkActionSerializer(serializers.Serializer):
    entity = serializers.ChoiceField(choices=[])
    action = serializers.ChoiceField(choices=[])
    ids = serializers.ListField(child=serializers.UUIDField(), required=False, default=list)
    items = serializers.ListField(
        child=BulkItemSerializer(), required=False, default=list,
        help_text="Ids with the version the decider saw: a changed one gets a `stale_version` outcome",
    )
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")
    signature = SignatureInputSerializer(
        required=False, help_text="Required for approve, reject and send back: one signature for every item",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # From the registry, which domain apps fill when Django starts.
        self.fields["entity"].choices, self.fields["action"].choices = registry.bulk_choices()

    def validate(self, attrs):
        if not attrs["ids"] and not attrs["items"]:
            raise serializers.ValidationError({"ids": ["No ids given: send ids, items or both."]})
        return attrs


class BulkThrottle(UserRateThrottle):
    """BULK_RATE submissions per user, counted in the shared cache (Redis)."""

    scope = "bulk"


class TooManyActiveJobs(exceptions.Throttled):
    default_code = "throttled"


class BulkActionView(APIView):
    """Apply one action to many requests of your unit as one job; per-id outcomes in its result.

    Ids that do not exist or belong to another unit come back as `not_found` and are never touched.
    """

    throttle_classes = [BulkThrottle]

    @extend_schema(
        request=BulkActionSerializer,
        responses={
            202: JobEnvelopeSerializer,
            400: OpenApiResponse(description="Unknown entity/action, no ids, too many ids, missing reason"),
            403: OpenApiResponse(description="Your role does not allow this action"),
            429: OpenApiResponse(description="Too many bulk submissions, or too many of yours still running"),
            503: OpenApiResponse(description="The job queue is unavailable; nothing was queued"),
        },
    )
    def post(self, request):
        data = BulkActionSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        entity, action, ids = data.validated_data["entity"], data.validated_data["action"], data.validated_data["ids"]
        kind = registry.bulk_kind(entity, action)
        if kind is None:
            raise serializers.ValidationError({"action": [f"No bulk {action} for {entity} requests."]})
        active = Job.objects.filter(
            requested_by=request.user, kind__in=registry.bulk_kind_names(), status__in=[JobStatus.QUEUED, JobStatus.RUNNING]
        ).count()
        if active >= settings.BULK_MAX_ACTIVE_PER_USER:
            raise TooManyActiveJobs(
                wait=5, detail=f"{active} of your bulk actions are still queued or running; wait for one to finish."
            )
        reason = data.validated_data["reason"].strip()
        versions = {str(item["id"]): item["version"] for item in data.validated_data["items"]}
        ids = [*ids, *versions]
        params = {"reason": reason, **({"versions": versions} if versions else {})}
        if signature_meaning(action):  # a decision: one signature for every item, given now
            bulk_check(actor=request.user, kind=kind, ids=ids, params=params)  # refusals cost no signature attempt
            signature = decision_sign(
                request, self, signature=data.validated_data.get("signature"), action=action, entity=entity,
                unit_id=request.user.unit_id,
            )
            params["signature_id"] = str(signature.id)
        unit = request.user.unit.code if request.user.unit_id else "-"
        job = bulk_submit(
            actor=request.user, kind=kind, ids=ids, params=params,
            description=f"bulk {kind.action.replace('_', ' ')} of {len(set(map(str, ids)))} {unit} {entity} requests "
            f"by {request.user.username}",
        )
        return job_accepted(job)
