"""Jobs over HTTP: the list (light rows), the detail (with targets and per-target outcomes, streamed
for a bulk job), and a job's outcomes page by page. Jobs are generic: what a job does is its kind's
business (the bulk actions on requests are the records app's, backend.records.bulk_api)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.generics import get_object_or_404
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from backend.common.api import ListFiltersForListsOnly

from . import registry
from .models import Job, JobOutcome

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
