from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from . import registry
from .models import Job
from .services import bulk_submit


class ProgressSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    done = serializers.IntegerField()
    failed = serializers.IntegerField()


class JobSerializer(serializers.ModelSerializer):
    progress = ProgressSerializer()

    class Meta:
        model = Job
        fields = ["id", "kind", "status", "progress", "result", "error", "targets", "requested_by",
                  "created_at", "started_at", "finished_at"]
        read_only_fields = fields


class JobEnvelopeSerializer(serializers.Serializer):
    job = JobSerializer()


def job_accepted(job: Job) -> Response:
    """202 Accepted with the job and where to follow it."""
    return Response(
        {"job": JobSerializer(job).data},
        status=status.HTTP_202_ACCEPTED,
        headers={"Location": f"/api/jobs/{job.id}/"},
    )


class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Jobs of your unit. A job of another unit is a plain 404."""

    serializer_class = JobSerializer
    filterset_fields = ["status", "kind"]
    ordering_fields = ["created_at"]
    ordering = ["-created_at", "id"]

    def get_queryset(self):
        user = self.request.user
        jobs = Job.objects.all()
        # getattr: an anonymous user (drf-spectacular's schema generation) sees nothing.
        return jobs if user.is_superuser else jobs.filter(unit_id=getattr(user, "unit_id", None))


class BulkActionSerializer(serializers.Serializer):
    entity = serializers.ChoiceField(choices=[])
    action = serializers.ChoiceField(choices=[])
    ids = serializers.ListField(child=serializers.UUIDField(), allow_empty=False)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # From the registry, which domain apps fill when Django starts.
        self.fields["entity"].choices, self.fields["action"].choices = registry.bulk_choices()


class BulkActionView(APIView):
    """Apply one action to many requests of your unit as one job; per-id outcomes in its result.

    Ids that do not exist or belong to another unit come back as `not_found` and are never touched.
    """

    @extend_schema(
        request=BulkActionSerializer,
        responses={
            202: JobEnvelopeSerializer,
            400: OpenApiResponse(description="Unknown entity/action, no ids, too many ids, missing reason"),
            403: OpenApiResponse(description="Your role does not allow this action"),
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
        reason = data.validated_data["reason"].strip()
        job = bulk_submit(
            actor=request.user, kind=kind, ids=ids, params={"reason": reason},
            description=f"bulk {kind.action.replace('_', ' ')} of {len(set(ids))} {entity} requests by {request.user.username}",
        )
        return job_accepted(job)
