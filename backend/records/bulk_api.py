"""POST /api/bulk-actions/: one action on many requests of your unit, as one job (the batch CLI and
the console use it). The decision use case (decisions.py) does the work, as for a single request."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from backend.accounts.api import signature_throttle
from backend.common.api import MAX_VERSION
from backend.common.errors import ValidationFailed
from backend.jobs import registry
from backend.jobs.api import JobEnvelopeSerializer, job_accepted
from backend.jobs.models import Job, JobStatus

from .actions import SPELLINGS
from .api_common import SignatureInputSerializer
from .bulk_preview import bulk_preview, resolve_numbers
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
    numbers = serializers.ListField(
        child=serializers.CharField(max_length=64), required=False, default=list,
        help_text="Request numbers as people see them (`WR-2026-0042`, any case), of your unit. A number that "
        "names none of your unit's requests refuses the whole action (400 `unknown_numbers`, "
        "details.numbers), before any signature is checked.",
    )
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
        if not attrs["ids"] and not attrs["items"] and not attrs["numbers"]:
            raise serializers.ValidationError({"ids": ["No ids given: send ids, numbers, items or any of them."]})
        seen: dict = {}
        for item in attrs["items"]:  # a request named with two versions: which one was seen is unknown
            if seen.setdefault(item["id"], item["version"]) != item["version"]:
                raise serializers.ValidationError({"items": [
                    f"{item['id']} is named with versions {seen[item['id']]} and {item['version']}: name each "
                    "request once, with the version you saw."
                ]})
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
        numbered = _numbered_ids(request.user, body)
        signature = body.get("signature") or {}
        decision = Decision(
            entity=body["entity"], action=body["action"], actor=request.user, reason=body["reason"], versions=versions,
            password=signature.get("password"), meaning=signature.get("meaning"),
            before_signing=signature_throttle(request, self),
        )
        job = decide_many(decision, [*map(str, body["ids"]), *numbered, *versions])
        return job_accepted(job)


def _numbered_ids(actor, body: dict) -> list[str]:
    """The ids the body's request numbers name; refuses them all when one names nothing."""
    if not body["numbers"]:
        return []
    resolved, unknown = resolve_numbers(actor=actor, entity=body["entity"], numbers=body["numbers"])
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise ValidationFailed(
            f"No {body['entity']} request of your unit has the number {shown}.", code="unknown_numbers",
            details={"numbers": unknown},
        )
    return list(resolved.values())


# What a preview item can be refused with: the job's own outcome codes for a request (docs/bulk.md).
PREVIEW_CODES = ["not_found", "duplicate", "four_eyes", "invalid_transition", "stale_version", "permission_denied",
                 "reason_required"]


class BulkPreviewItemSerializer(serializers.Serializer):
    ref = serializers.CharField(help_text="The request number or id as it was sent")
    ok = serializers.BooleanField(help_text="True: the job would apply the action to it if it ran now")
    code = serializers.ChoiceField(
        choices=PREVIEW_CODES, allow_null=True,
        help_text="Why not (null when ok): the outcome the job would give it, or `duplicate` for a request named twice",
    )
    message = serializers.CharField(allow_blank=True)
    id = serializers.UUIDField(allow_null=True)
    request_number = serializers.CharField(allow_null=True)
    status = serializers.CharField(allow_null=True)
    version = serializers.IntegerField(allow_null=True, help_text="The version now: what a decision would be pinned to")


class BulkPreviewSerializer(serializers.Serializer):
    entity = serializers.CharField()
    action = serializers.CharField()
    count = serializers.IntegerField(help_text="How many requests the action would apply to")
    refused = serializers.IntegerField(help_text="How many of those named it would refuse")
    items = BulkPreviewItemSerializer(many=True)


class BulkPreviewInputSerializer(BulkActionSerializer):
    signature = None  # nothing is signed here


class BulkPreviewThrottle(UserRateThrottle):
    """Previews read only, and a console checks before every signing: a budget of their own, not the
    bulk submissions' (BULK_PREVIEW_RATE)."""

    scope = "bulk_preview"

    def get_rate(self):
        return settings.BULK_PREVIEW_RATE


class BulkPreviewView(APIView):
    """Check a bulk action before it is signed: the requests it names (by number or id), each with
    what the job would do with it now. Reads only: nothing is queued or signed, no password asked."""

    throttle_classes = [BulkPreviewThrottle]

    @extend_schema(
        request=BulkPreviewInputSerializer,
        responses={
            200: BulkPreviewSerializer,
            400: OpenApiResponse(description="Unknown entity/action, nothing named, too many, missing reason"),
            403: OpenApiResponse(description="Your role does not allow this action"),
        },
    )
    def post(self, request):
        data = BulkPreviewInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        body = data.validated_data
        versions = {str(item["id"]): item["version"] for item in body["items"]}
        refs = [*body["numbers"], *map(str, body["ids"]), *versions]
        items = bulk_preview(
            actor=request.user, entity=body["entity"], action=body["action"], reason=body["reason"], refs=refs,
            versions=versions,
        )
        refused = sum(1 for item in items if not item.ok)
        return Response(BulkPreviewSerializer({
            "entity": body["entity"], "action": body["action"], "count": len(items) - refused, "refused": refused,
            "items": items,
        }).data)
