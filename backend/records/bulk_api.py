"""POST /api/bulk-actions/: one action on many requests of your unit, as one job (the batch CLI and
the console use it). The decision use case (decisions.py) does the work, as for a single request."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from backend.accounts.api import SignatureInputSerializer, signature_throttle
from backend.common.api import MAX_VERSION
from backend.jobs import registry
from backend.jobs.api import JobEnvelopeSerializer, job_accepted
from backend.jobs.models import Job, JobStatus

from .actions import SPELLINGS
from .decisions import Decision, decide_many
from .lifecycle import REQUEST_KINDS


class BulkItemSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    version = serializers.IntegerField(min_value=1, max_value=MAX_VERSION, help_text="The version the decider saw")


class BulkActionSerializer(serializers.Serializer):
    entity = serializers.ChoiceField(choices=sorted(REQUEST_KINDS))
    action = serializers.ChoiceField(
        choices=SPELLINGS, help_text="approve, reject, send-back (or send_back: the same action), resubmit",
    )
    ids = serializers.ListField(child=serializers.UUIDField(), required=False, default=list)
    items = serializers.ListField(
        child=BulkItemSerializer(), required=False, default=list,
        help_text="Ids with the version the decider saw: a changed one gets a `stale_version` outcome. "
        "A decision on plain `ids` is pinned to each request's version when it is signed.",
    )
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")
    signature = SignatureInputSerializer(
        required=False, help_text="Required for approve, reject and send back: one signature for every item",
    )

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
            400: OpenApiResponse(description="Unknown entity/action, no ids, too many ids, missing reason or signature"),
            403: OpenApiResponse(description="Your role does not allow this action, or `signature_invalid`"),
            423: OpenApiResponse(description="`signature_locked`: too many wrong signature passwords"),
            429: OpenApiResponse(description="Too many bulk submissions, or too many of yours still running"),
            503: OpenApiResponse(description="The job queue is unavailable; nothing was queued"),
        },
    )
    def post(self, request):
        data = BulkActionSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        body = data.validated_data
        active = Job.objects.filter(
            requested_by=request.user, kind__in=registry.bulk_kind_names(), status__in=[JobStatus.QUEUED, JobStatus.RUNNING]
        ).count()
        if active >= settings.BULK_MAX_ACTIVE_PER_USER:
            raise TooManyActiveJobs(
                wait=5, detail=f"{active} of your bulk actions are still queued or running; wait for one to finish."
            )
        versions = {str(item["id"]): item["version"] for item in body["items"]}
        signature = body.get("signature") or {}
        decision = Decision(
            entity=body["entity"], action=body["action"], actor=request.user, reason=body["reason"], versions=versions,
            password=signature.get("password"), meaning=signature.get("meaning"),
            before_signing=signature_throttle(request, self),
        )
        job = decide_many(decision, [*map(str, body["ids"]), *versions])
        return job_accepted(job)
